// Deterministic generator of varied sentences for cross-checking GPT-2 tokenizers: many scripts,
// digits, punctuation, whitespace runs, contractions, emoji, ill-assorted mixtures.
//
//   node sentences.js [count] [seed]   prints a JSON array of strings
//
// Every character comes from ranges that were assigned, with the same general category, long
// before Unicode 14 (the version of mue's tables), so a newer Unicode in node cannot change how a
// character is classified. Two characters are deliberately left out, because JavaScript's \s
// and the `regex` module's \s (GPT-2's) disagree on them: U+0085 (White_Space, not JS \s) and
// U+FEFF (JS \s, not White_Space). mue follows GPT-2 there; tests/test_tokenizer.cpp checks
// those two against ids from GPT-2's Python encoder instead.
'use strict';

// mulberry32: small, fast, and the same sequence everywhere.
function makeRng(seed) {
  let a = seed >>> 0;
  return function next() {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const R = (first, last) => [first, last];
const POOLS = {
  latinLower: [R(0x61, 0x7A)],
  latinUpper: [R(0x41, 0x5A)],
  latin1: [R(0xC0, 0xD6), R(0xD8, 0xF6), R(0xF8, 0xFF)],
  latinExtA: [R(0x100, 0x17F)],
  greek: [R(0x391, 0x3A1), R(0x3A3, 0x3A9), R(0x3B1, 0x3C9)],
  cyrillic: [R(0x410, 0x44F)],
  armenian: [R(0x531, 0x556), R(0x561, 0x586)],
  hebrew: [R(0x5D0, 0x5EA)],
  arabic: [R(0x627, 0x63A), R(0x641, 0x64A)],
  devanagari: [R(0x905, 0x939)],
  thai: [R(0xE01, 0xE2E)],
  georgian: [R(0x10D0, 0x10FA)],
  hangul: [R(0xAC00, 0xD7A3)],
  kana: [R(0x3041, 0x3094), R(0x30A1, 0x30FA)],
  cjk: [R(0x4E00, 0x9FA5)],
  ethiopic: [R(0x1200, 0x1246)],
  mathLetters: [R(0x1D400, 0x1D454)],  // non-BMP letters (Lu/Ll)
  // Marks are not letters, so they break \p{L}+ runs.
  marks: [R(0x300, 0x36F), R(0x64B, 0x652), R(0x93E, 0x94D), R(0xE31, 0xE31), R(0xE34, 0xE3A)],
  modifierLetters: [R(0x2B0, 0x2C1), R(0x30FC, 0x30FC)],  // Lm
  digits: [R(0x30, 0x39)],
  otherDigits: [R(0x660, 0x669), R(0x966, 0x96F), R(0xE50, 0xE59), R(0xFF10, 0xFF19)],
  otherNumbers: [R(0xB2, 0xB3), R(0xB9, 0xB9), R(0xBC, 0xBE), R(0x2160, 0x2182), R(0x2460, 0x249B)],
  asciiPunct: [R(0x21, 0x2F), R(0x3A, 0x40), R(0x5B, 0x60), R(0x7B, 0x7E)],
  unicodePunct: [R(0xA1, 0xA1), R(0xAB, 0xAB), R(0xBB, 0xBB), R(0xBF, 0xBF), R(0x2010, 0x2027),
                 R(0x3001, 0x3003), R(0x300C, 0x300F), R(0x20AC, 0x20AC), R(0xA3, 0xA5),
                 R(0xA9, 0xA9), R(0xAE, 0xAE), R(0xB0, 0xB1)],
  emoji: [R(0x1F600, 0x1F64F), R(0x1F300, 0x1F320), R(0x1F680, 0x1F6C5), R(0x2600, 0x2613)],
  invisible: [R(0x200B, 0x200D), R(0xAD, 0xAD), R(0xFE0F, 0xFE0F)],  // ZWSP, ZWNJ, ZWJ, SHY, VS16
  controls: [R(0x00, 0x08), R(0x0E, 0x1F), R(0x7F, 0x7F)],
  // White_Space characters that JavaScript's \s also has.
  whitespace: [R(0x20, 0x20), R(0x09, 0x0D), R(0xA0, 0xA0), R(0x1680, 0x1680), R(0x2000, 0x200A),
               R(0x2028, 0x2029), R(0x202F, 0x202F), R(0x205F, 0x205F), R(0x3000, 0x3000)],
};

const ENGLISH = ('a the of and to in is was he for it with as his on be at by had are but from ' +
  'or have an they which one you were her all she there would their we him been has when who ' +
  'image describe what does man woman dog cat riding horse street sitting table pizza plate ' +
  'two three people standing next tennis racket playing frisbee grass field skateboard').split(' ');
const CONTRACTIONS = ["don't", "I'm", "they're", "we've", "he'll", "she'd", "it's", "'s", "'t",
  "'re", "'ve", "'m", "'ll", "'d", "O'Neil", "rock'n'roll", "'tis", "I'M", "DON'T", "Can'T",
  "y'all", "ma'am", "'''", "''s", "'sre", "'llama", "'dd", "it'S", "you'Re", "'"];
const SNIPPETS = ['https://example.com/a?b=c&d=e#frag', 'foo_bar(x, y);', '<|endoftext|>',
  '#hashtag', '@user_name', 'e-mail: a.b@c.org', '3.14159', '1,000,000', '-42', '50%', '3rd',
  '2nd', '$9.99', 'C++20', 'x86_64', 'U.S.A.', '...', '?!', '!!!', ',,,', ',,,,', ',,,,,,,',
  '",', '},{"', '"},', '), ', '--', '—', '(( ))', '[[1, 2], [3, 4]]', '{"a": 1}', '\\n',
  'ÀÉÎÕÜ', 'naïve café', 'Straße', 'ΣΊΣΥΦΟΣ', 'İstanbul', 'ﬁne', 'Ⅻ', '½', '²³', 'a²b',
  '٣٤٥', '१२३', '１２３', 'ｈｅｌｌｏ', '👍🏽', '👨‍👩‍👧', '🇫🇷', '❤️', 'e\u0301', 'क्षि', 'ไทย',
  '中文字符', 'カタカナー', '한국어', '\u200bzero\u200bwidth'];

function charFrom(rng, pools) {
  let total = 0;
  for (const [first, last] of pools) total += last - first + 1;
  let pick = Math.floor(rng() * total);
  for (const [first, last] of pools) {
    const size = last - first + 1;
    if (pick < size) return String.fromCodePoint(first + pick);
    pick -= size;
  }
  throw new Error('unreachable');
}

const pickOne = (rng, list) => list[Math.floor(rng() * list.length)];
const between = (rng, low, high) => low + Math.floor(rng() * (high - low + 1));

function run(rng, pool, low, high) {
  let s = '';
  const n = between(rng, low, high);
  for (let i = 0; i < n; i++) s += charFrom(rng, POOLS[pool]);
  return s;
}

const SCRIPTS = ['latinLower', 'latin1', 'latinExtA', 'greek', 'cyrillic', 'armenian', 'hebrew',
  'arabic', 'devanagari', 'thai', 'georgian', 'hangul', 'kana', 'cjk', 'ethiopic', 'mathLetters'];

function word(rng) {
  const kind = rng();
  if (kind < 0.25) {
    const w = pickOne(rng, ENGLISH);
    const c = rng();
    if (c < 0.15) return w[0].toUpperCase() + w.slice(1);
    if (c < 0.2) return w.toUpperCase();
    return w;
  }
  if (kind < 0.33) return pickOne(rng, CONTRACTIONS);
  if (kind < 0.40) return pickOne(rng, SNIPPETS);
  if (kind < 0.55) {
    // A word of one script, sometimes with combining marks or modifier letters inside.
    let w = run(rng, pickOne(rng, SCRIPTS), 1, 8);
    if (rng() < 0.2) w += run(rng, 'marks', 1, 2) + run(rng, pickOne(rng, SCRIPTS), 0, 3);
    if (rng() < 0.05) w += run(rng, 'modifierLetters', 1, 1);
    return w;
  }
  if (kind < 0.63) {
    const d = rng();
    if (d < 0.6) return run(rng, 'digits', 1, 12);
    if (d < 0.8) return run(rng, 'otherDigits', 1, 5);
    return run(rng, 'otherNumbers', 1, 3);
  }
  if (kind < 0.72) return run(rng, rng() < 0.6 ? 'asciiPunct' : 'unicodePunct', 1, 5);
  if (kind < 0.77) {
    let e = run(rng, 'emoji', 1, 3);
    if (rng() < 0.3) e += run(rng, 'invisible', 1, 1) + run(rng, 'emoji', 1, 1);
    return e;
  }
  if (kind < 0.85) {
    // Mixtures that switch class inside a "word".
    let w = '';
    const parts = between(rng, 2, 5);
    const mixPools = ['latinLower', 'latinUpper', 'digits', 'asciiPunct', 'cyrillic', 'emoji',
                      'invisible', 'otherNumbers', 'marks'];
    for (let i = 0; i < parts; i++) w += run(rng, pickOne(rng, mixPools), 1, 4);
    return w;
  }
  if (kind < 0.88) return run(rng, 'latinLower', 20, 60);  // long words exercise BPE
  if (kind < 0.90) return run(rng, 'controls', 1, 2);
  if (kind < 0.95) return run(rng, 'latinUpper', 1, 6);
  return run(rng, 'cjk', 1, 4) + run(rng, 'unicodePunct', 0, 1);
}

function whitespaceRun(rng) {
  const r = rng();
  if (r < 0.5) return ' '.repeat(between(rng, 2, 4));
  if (r < 0.8) {
    let s = '';
    const n = between(rng, 1, 4);
    for (let i = 0; i < n; i++) s += pickOne(rng, [' ', ' ', '\t', '\n', '\r\n', '\n\n']);
    return s;
  }
  return run(rng, 'whitespace', 1, 3);
}

function separator(rng) {
  const r = rng();
  if (r < 0.75) return ' ';
  if (r < 0.85) return '';
  return whitespaceRun(rng);
}

// Hand-picked cases first: the pattern's corners.
const FIXED = [
  ' what does the image describe?', ' no', ' yes', ' maybe', '', ' ', '  ', '\t', '\n', ' \n ',
  'a  b', 'a   b', 'a \tb', 'a\t b', 'a \n\n b', 'trailing   ', '   leading', '\n\nparagraphs\n\n',
  "I'm sure we've seen they'll've", "'s's's", "x's", "x 's", "!'s", "'S", ' 123 4567 89012345',
  '1.5e-10', 'A1b2C3', ' ,,,, ,,, , ,,,,,,', 'Hello, world!', 'hello   world   !!!   ?',
  '  \u00a0 \u3000x', '\u2028\u2029', 'Ωmega ωmega', '日本語のテキスト', 'مرحبا بالعالم',
  'नमस्ते दुनिया', 'Привет, мир!', 'שלום עולם', 'สวัสดีครับ', '👋🌍!', '<s> </s> <pad>',
];

function generateSentences(count, seed) {
  const rng = makeRng(seed);
  const out = FIXED.slice(0, count);
  while (out.length < count) {
    let s = rng() < 0.3 ? (rng() < 0.5 ? ' ' : whitespaceRun(rng)) : '';
    const words = between(rng, 1, 25);
    for (let i = 0; i < words; i++) s += (i > 0 ? separator(rng) : '') + word(rng);
    if (rng() < 0.15) s += whitespaceRun(rng);
    out.push(s);
  }
  return out;
}

module.exports = { generateSentences };

if (require.main === module) {
  const count = parseInt(process.argv[2] || '100', 10);
  const seed = parseInt(process.argv[3] || '1', 10);
  process.stdout.write(JSON.stringify(generateSentences(count, seed)) + '\n');
}
