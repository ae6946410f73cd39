// Fuzzes the bench dump manifest reader: the input is manifest.jsonl of a dump directory that
// holds one image (image.png). Every line is a sample or a counted bad line; a manifest-level
// problem is mue::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "fuzz_util.h"
#include "io/dump.h"
#include "mue/tensor.h"

namespace {

template <typename Dump>
void check_counts(const Dump& dump) {
  // Lines are 1-based and in manifest order; a line is never both a sample and a bad line.
  int last = 0;
  for (const auto& s : dump.samples) {
    if (s.line <= last) std::abort();
    last = s.line;
  }
  last = 0;
  for (const auto& b : dump.bad_lines) {
    if (b.line <= last || b.message.empty()) std::abort();
    last = b.line;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::filesystem::path dir = mue::fuzz::scratch_dir() / "dump";
  static const bool made = [&] {
    std::filesystem::create_directories(dir);
    const uint8_t png[] = {0x89, 'P', 'N', 'G'};
    mue::fuzz::write_file(dir / "image.png", png, sizeof png);
    return true;
  }();
  (void)made;
  mue::fuzz::write_file(dir / "manifest.jsonl", data, size);
  try {
    (void)mue::infer_dump_task(dir);
  } catch (const mue::Error&) {
  }
  try {
    check_counts(mue::read_ve_dump(dir, mue::OnBadLine::kCollect));
    check_counts(mue::read_caption_dump(dir, mue::OnBadLine::kCollect));
  } catch (const mue::Error&) {
  }
  try {
    (void)mue::read_ve_dump(dir, mue::OnBadLine::kThrow);
  } catch (const mue::Error&) {
  }
  return 0;
}
