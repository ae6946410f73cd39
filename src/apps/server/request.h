// mue-server's requests: what a POST /v1/caption or /v1/entail carries (an image and texts, as
// JSON with a base64 image or as a multipart upload), checked against the server's limits, and
// the call options its overrides make. Every refusal is a RequestError naming the field and the
// reason, answered as {"error": "..."} with its HTTP status.
#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "mue/mue.h"

namespace mue::server {

enum class Task { kCaption, kEntail };
const char* task_name(Task task);  // "caption", "entail"

// A refusal the client caused (4xx) or the server's state (503).
class RequestError : public std::runtime_error {
 public:
  RequestError(int status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

// The client-side limits that are not the engine's (the image's pixels are:
// EngineOptions::max_image_pixels).
struct RequestLimits {
  size_t max_text_bytes = 2000;  // a premise or a hypothesis
};

// A request's fields before its image is decoded.
struct RequestFields {
  std::string image;       // the encoded image file (PNG, JPEG)
  std::string image_name;  // names it in errors: the upload's file name, else "image"
  std::string premise, hypothesis;
  nlohmann::json policy;      // null, an object of exit-policy fields, or an inline spec string
  nlohmann::json generation;  // null or an object of generation fields
};

// One part of a multipart/form-data body.
struct FormField {
  std::string name, filename, content;
};

// {"image": BASE64, "hypothesis": TEXT, "premise": TEXT, "policy": {...} | "key:value,...",
//  "generation": {...}, "beam": N, "max_len": N}; a field the task does not take is refused.
RequestFields parse_json_request(const std::string& body, Task task, const RequestLimits& limits);
// The same fields as form fields; "image" is the uploaded file, "policy" and "generation" are
// JSON text (a policy may also be an inline spec).
RequestFields parse_form_request(const std::vector<FormField>& fields, Task task,
                                 const RequestLimits& limits);

// Standard base64 (RFC 4648; padding optional, whitespace and a "data:...;base64," prefix
// allowed). Throws RequestError 400 naming `field` and the first bad character's offset.
std::string decode_base64(const std::string& text, const std::string& field);
// The inverse, for clients and tests.
std::string encode_base64(const std::string& bytes);

// The call a request makes: the task's default exit policy with the request's policy fields over
// it, and the default generation settings with its generation fields over them. Refusals name
// the field (RequestError 400). `key` is equal for two requests exactly when they may share a
// batch (same task, policy and, for captions, generation).
struct ResolvedCall {
  CallOptions call;
  std::string key;
};
ResolvedCall resolve_call(const RequestFields& fields, Task task, const Engine& engine,
                          const ExitPolicy& default_policy,
                          const GenerationSettings& default_generation);

}  // namespace mue::server
