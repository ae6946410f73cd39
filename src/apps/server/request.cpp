#include "apps/server/request.h"

#include <array>
#include <set>

#include "apps/common/exit_settings.h"

namespace mue::server {

const char* task_name(Task task) { return task == Task::kCaption ? "caption" : "entail"; }

namespace {

RequestError bad(const std::string& message) { return RequestError(400, message); }

void check_text(const std::string& field, const std::string& text, const RequestLimits& limits) {
  if (text.size() > limits.max_text_bytes)
    throw RequestError(413, "field \"" + field + "\" is " + std::to_string(text.size()) +
                                " bytes, more than the limit of " +
                                std::to_string(limits.max_text_bytes));
}

// A count such as "beam": a JSON integer, or a form field's text that is one.
int count_field(const std::string& field, const nlohmann::json& value) {
  if (value.is_number_integer()) return value.get<int>();
  if (value.is_string()) {
    const std::string& s = value.get_ref<const std::string&>();
    size_t used = 0;
    try {
      long v = std::stol(s, &used);
      if (used == s.size() && v >= INT32_MIN && v <= INT32_MAX) return static_cast<int>(v);
    } catch (const std::exception&) {
    }
  }
  throw bad("field \"" + field + "\" must be an integer, got " + value.dump());
}

// "beam" and "max_len" are short forms of the generation fields, as the CLI's --beam and
// --max-len.
void fold_generation_shortcut(RequestFields& r, const std::string& field,
                              const nlohmann::json& value) {
  if (r.generation.is_null()) r.generation = nlohmann::json::object();
  r.generation[field == "beam" ? "beam_size" : "max_len"] = count_field(field, value);
}

void check_fields(const RequestFields& r, Task task, bool has_image, bool has_hypothesis,
                  const RequestLimits& limits) {
  if (!has_image) throw bad("missing field \"image\"");
  if (r.image.empty()) throw bad("field \"image\" is empty");
  if (task == Task::kEntail && !has_hypothesis) throw bad("missing field \"hypothesis\"");
  check_text("premise", r.premise, limits);
  check_text("hypothesis", r.hypothesis, limits);
}

// The fields each task takes; anything else is refused rather than ignored.
bool known_field(const std::string& name, Task task) {
  static const std::set<std::string> common = {"image", "policy", "generation"};
  static const std::set<std::string> caption = {"beam", "max_len"};
  static const std::set<std::string> entail = {"premise", "hypothesis"};
  return common.count(name) || (task == Task::kCaption ? caption : entail).count(name);
}

std::string unknown_field_message(const std::string& name, Task task) {
  return "unknown field \"" + name + "\" for /v1/" + task_name(task) + " (takes image, " +
         (task == Task::kCaption ? "beam, max_len" : "hypothesis, premise") +
         ", policy, generation)";
}

}  // namespace

RequestFields parse_json_request(const std::string& body, Task task, const RequestLimits& limits) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(body);
  } catch (const nlohmann::json::parse_error& e) {
    throw bad(std::string("body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw bad("body must be a JSON object");
  RequestFields r;
  r.image_name = "image";
  bool has_image = false, has_hypothesis = false;
  auto text = [&](const std::string& key, const nlohmann::json& v) {
    if (!v.is_string()) throw bad("field \"" + key + "\" must be a string");
    return v.get<std::string>();
  };
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (!known_field(key, task)) throw bad(unknown_field_message(key, task));
    if (key == "image") {
      r.image = decode_base64(text(key, *it), "image");
      has_image = true;
    } else if (key == "premise") {
      r.premise = text(key, *it);
    } else if (key == "hypothesis") {
      r.hypothesis = text(key, *it);
      has_hypothesis = true;
    } else if (key == "policy") {
      if (!it->is_object() && !it->is_string() && !it->is_null())
        throw bad("field \"policy\" must be an object of exit-policy fields or a spec string");
      r.policy = *it;
    }
  }
  // The generation object first, then its short forms over it.
  if (j.contains("generation")) {
    if (!j["generation"].is_object() && !j["generation"].is_null())
      throw bad("field \"generation\" must be an object of generation fields");
    if (task == Task::kEntail) throw bad("field \"generation\" is for /v1/caption only");
    r.generation = j["generation"];
  }
  for (const char* key : {"beam", "max_len"})
    if (j.contains(key)) fold_generation_shortcut(r, key, j[key]);
  check_fields(r, task, has_image, has_hypothesis, limits);
  return r;
}

RequestFields parse_form_request(const std::vector<FormField>& fields, Task task,
                                 const RequestLimits& limits) {
  RequestFields r;
  bool has_image = false, has_hypothesis = false;
  std::set<std::string> seen;
  nlohmann::json shortcuts = nlohmann::json::object();
  for (const FormField& f : fields) {
    if (!known_field(f.name, task)) throw bad(unknown_field_message(f.name, task));
    if (!seen.insert(f.name).second) throw bad("field \"" + f.name + "\" is given twice");
    if (f.name == "image") {
      r.image = f.content;
      r.image_name = f.filename.empty() ? "image" : f.filename;
      has_image = true;
    } else if (f.name == "premise") {
      r.premise = f.content;
    } else if (f.name == "hypothesis") {
      r.hypothesis = f.content;
      has_hypothesis = true;
    } else if (f.name == "policy") {
      // JSON text of the policy fields, or an inline spec.
      const size_t first = f.content.find_first_not_of(" \t\r\n");
      if (first != std::string::npos && f.content[first] == '{') {
        try {
          r.policy = nlohmann::json::parse(f.content);
        } catch (const nlohmann::json::parse_error& e) {
          throw bad(std::string("field \"policy\" is not valid JSON: ") + e.what());
        }
      } else {
        r.policy = f.content;
      }
    } else if (f.name == "generation") {
      try {
        r.generation = nlohmann::json::parse(f.content);
      } catch (const nlohmann::json::parse_error& e) {
        throw bad(std::string("field \"generation\" is not valid JSON: ") + e.what());
      }
      if (!r.generation.is_object())
        throw bad("field \"generation\" must be an object of generation fields");
    } else {
      shortcuts[f.name] = f.content;  // beam, max_len
    }
  }
  if (task == Task::kEntail && !r.generation.is_null())
    throw bad("field \"generation\" is for /v1/caption only");
  for (const char* key : {"beam", "max_len"})
    if (shortcuts.contains(key)) fold_generation_shortcut(r, key, shortcuts[key]);
  check_fields(r, task, has_image, has_hypothesis, limits);
  return r;
}

std::string decode_base64(const std::string& text, const std::string& field) {
  static const std::array<int8_t, 256> value = [] {
    std::array<int8_t, 256> v;
    v.fill(-1);
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) v[static_cast<uint8_t>(alphabet[i])] = static_cast<int8_t>(i);
    return v;
  }();
  size_t start = 0;
  if (text.rfind("data:", 0) == 0) {
    const size_t comma = text.find(',');
    if (comma == std::string::npos || text.substr(0, comma).find(";base64") == std::string::npos)
      throw bad("field \"" + field + "\": a data URL must be \"data:TYPE;base64,...\"");
    start = comma + 1;
  }
  std::string out;
  out.reserve(text.size() / 4 * 3);
  uint32_t bits = 0;
  int nbits = 0, digits = 0, padding = 0;
  for (size_t i = start; i < text.size(); ++i) {
    const uint8_t c = static_cast<uint8_t>(text[i]);
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      ++padding;
      continue;
    }
    if (padding > 0 || value[c] < 0)
      throw bad("field \"" + field + "\" is not base64: " +
                (padding > 0 ? std::string("data after the '=' padding")
                             : "character " + nlohmann::json(std::string(1, text[i])).dump()) +
                " at offset " + std::to_string(i));
    bits = (bits << 6) | static_cast<uint32_t>(value[c]);
    nbits += 6;
    ++digits;
    if (nbits >= 8) {
      nbits -= 8;
      out.push_back(static_cast<char>((bits >> nbits) & 0xFF));
    }
  }
  if (digits % 4 == 1 || padding > 2 || (padding > 0 && (digits + padding) % 4 != 0))
    throw bad("field \"" + field + "\" is not base64: its length (" + std::to_string(digits) +
              " digits, " + std::to_string(padding) + " '=') is not that of whole bytes");
  return out;
}

std::string encode_base64(const std::string& bytes) {
  const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v =
        (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out.push_back(alphabet[(v >> s) & 63]);
  }
  if (i < bytes.size()) {
    uint32_t v = uint8_t(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= uint8_t(bytes[i + 1]) << 8;
    out.push_back(alphabet[(v >> 18) & 63]);
    out.push_back(alphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < bytes.size() ? alphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

namespace {

GenerationSettings apply_generation(const nlohmann::json& g, GenerationSettings out) {
  for (auto it = g.begin(); it != g.end(); ++it) {
    const std::string where = "generation." + it.key();
    if (it.key() == "beam_size") {
      out.beam_size = count_field(where, *it);
    } else if (it.key() == "max_len") {
      out.max_len = count_field(where, *it);
    } else if (it.key() == "min_len") {
      out.min_len = count_field(where, *it);
    } else if (it.key() == "no_repeat_ngram_size") {
      out.no_repeat_ngram_size = count_field(where, *it);
    } else if (it.key() == "length_penalty") {
      if (!it->is_number()) throw bad("field \"" + where + "\" must be a number");
      out.length_penalty = it->get<double>();
    } else {
      throw bad("unknown field \"" + where +
                "\" (beam_size, max_len, min_len, no_repeat_ngram_size, length_penalty)");
    }
  }
  try {
    out.validate();
  } catch (const Error& e) {
    throw bad(std::string("field \"generation\": ") + e.what());
  }
  return out;
}

}  // namespace

ResolvedCall resolve_call(const RequestFields& fields, Task task, const Engine& engine,
                          const ExitPolicy& default_policy,
                          const GenerationSettings& default_generation) {
  ResolvedCall r;
  ExitPolicy policy = default_policy;
  if (!fields.policy.is_null()) {
    // The default's fields with the request's over them, so a request names only what it
    // changes, in the policy files' JSON or the CLI's inline spec grammar.
    nlohmann::json merged = default_policy.to_json();
    try {
      if (fields.policy.is_string()) {
        apps::apply_exit_spec(merged, fields.policy.get<std::string>(), "field \"policy\"");
      } else {
        for (auto it = fields.policy.begin(); it != fields.policy.end(); ++it)
          merged[it.key()] = *it;
      }
      policy = ExitPolicy::from_json(merged, "field \"policy\"");
      engine.check_exit_policy(policy);
    } catch (const Error& e) {
      throw bad(e.what());
    }
  }
  r.call.exit_policy = policy;
  r.key = std::string(task_name(task)) + " " + policy.to_json().dump();
  if (task == Task::kCaption) {
    r.call.generation = fields.generation.is_null()
                            ? default_generation
                            : apply_generation(fields.generation, default_generation);
    r.key += " " + r.call.generation->to_json().dump();
  }
  return r;
}

}  // namespace mue::server
