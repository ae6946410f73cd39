// The smallest complete use of the library: load a model with a default exit policy, caption an
// image, ask two questions about it, and one again with a policy for that call only, printing
// where each stack exited.
//
//   caption_and_entail MODEL_DIR IMAGE
#include <iostream>

#include "mue/mue.h"
#include "mue/runtime.h"

int main(int argc, char** argv) {
  mue::adopt_openmp_wait_policy(argv);  // before any OpenMP work: see mue/runtime.h
  if (argc != 3) {
    std::cerr << "usage: caption_and_entail MODEL_DIR IMAGE\n";
    return 2;
  }
  try {
    mue::EngineOptions options;
    options.threads = 2;
    options.exit_policy.exit_threshold_image = 0.99;  // MuE: stop a stream when a layer
    options.exit_policy.exit_threshold_text = 0.99;   // barely changes its input
    auto engine = mue::Engine::load(argv[1], options);

    mue::PreparedImage image = engine->prepare_image(argv[2]);
    mue::CaptionResult caption = engine->caption(image);
    std::cout << "caption: " << caption.caption << "\n"
              << "  layers: image " << caption.exits.image_layers << ", text "
              << caption.exits.text_layers << ", decoder " << caption.exits.mean_decoder_layers()
              << "; expected time reduction " << caption.exits.expected_time_reduction() << "\n";

    // Both questions reuse the image stream's output: the image is encoded once.
    for (const char* hypothesis : {"there is an animal", "the picture is empty"}) {
      mue::EntailmentResult r = engine->entail(image, "", hypothesis);
      std::cout << "\"" << hypothesis << "\": " << r.label_name() << " (p=" << r.p_entailment << "/"
                << r.p_neutral << "/" << r.p_contradiction << "), image reused "
                << (r.exits.image_reused ? "yes" : "no") << "\n";
    }

    // Options per call: the same question at full depth, the engine's default left as it is.
    mue::CallOptions full_depth;
    full_depth.exit_policy = mue::ExitPolicy::full_depth();
    mue::EntailmentResult full = engine->entail(image, "", "there is an animal", full_depth);
    std::cout << "at full depth: " << full.label_name() << ", text layers "
              << full.exits.text_layers << " of " << full.exits.encoder_depth << "\n";
  } catch (const mue::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
