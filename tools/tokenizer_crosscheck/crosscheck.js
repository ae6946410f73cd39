// Encodes generated sentences with the npm package gpt-3-encoder (an independent JavaScript
// GPT-2 encoder) and writes [{"text": ..., "ids": [...]}, ...] for tests/test_tokenizer.cpp.
//
//   node crosscheck.js <npm prefix holding node_modules/gpt-3-encoder> <count> <seed> <out.json>
'use strict';
const fs = require('fs');
const path = require('path');
const { generateSentences } = require('./sentences.js');

function main() {
  const [prefix, countArg, seedArg, outPath] = process.argv.slice(2);
  if (!outPath) {
    process.stderr.write('usage: node crosscheck.js <npm prefix> <count> <seed> <out.json>\n');
    process.exit(2);
  }
  const encoder = require(path.resolve(prefix, 'node_modules', 'gpt-3-encoder'));
  const sentences = generateSentences(parseInt(countArg, 10), parseInt(seedArg, 10));
  // An id the package cannot find comes out as null, and the C++ side reports it.
  const pairs = sentences.map((text) => ({ text, ids: encoder.encode(text) }));
  fs.writeFileSync(outPath, JSON.stringify(pairs));
}

main();
