// Python bindings (pybind11) of the public API, mue/mue.h: the extension mue._mue, which the
// package mue (src/python/mue/__init__.py) re-exports.
//  - Images come as paths, bytes of an encoded image, NumPy uint8 arrays (H, W, 3) or PIL
//    images; pixels are handed to the engine as a lossless PNG, so every form decodes to the same
//    pixels and gives the same result.
//  - Exit policies go through their JSON form (ExitPolicy::from_json / to_json), so fields the
//    C++ struct gains need no change here.
//  - Every mue::Error becomes mue.Error (a ValueError) with the engine's message.
//  - Calls release the GIL, so Python threads share one Engine as C++ threads do (mue.h).
#include <png.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <csetjmp>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "mue/mue.h"
#include "mue/runtime.h"

namespace py = pybind11;

namespace {

using PreparedImagePtr = std::shared_ptr<mue::PreparedImage>;

std::string type_name(py::handle h) { return py::str(py::type::of(h).attr("__name__")); }

// ---- JSON <-> Python ------------------------------------------------------------------------

py::object to_python(const nlohmann::json& j) {
  using T = nlohmann::json::value_t;
  switch (j.type()) {
    case T::boolean:
      return py::bool_(j.get<bool>());
    case T::number_integer:
      return py::int_(j.get<int64_t>());
    case T::number_unsigned:
      return py::int_(j.get<uint64_t>());
    case T::number_float:
      return py::float_(j.get<double>());
    case T::string:
      return py::str(j.get<std::string>());
    case T::array: {
      py::list out;
      for (const auto& v : j) out.append(to_python(v));
      return out;
    }
    case T::object: {
      py::dict out;
      for (auto it = j.begin(); it != j.end(); ++it) out[py::str(it.key())] = to_python(it.value());
      return out;
    }
    default:
      return py::none();
  }
}

// `where` names the value in errors ("ExitPolicy field \"calm_tau\"").
nlohmann::json to_json(py::handle h, const std::string& where) {
  if (h.is_none()) return nullptr;
  if (py::isinstance<py::bool_>(h)) return h.cast<bool>();
  if (py::isinstance<py::int_>(h) ||
      (!py::isinstance<py::float_>(h) && py::hasattr(h, "__index__")))
    return py::int_(py::reinterpret_borrow<py::object>(h)).cast<int64_t>();
  if (py::isinstance<py::float_>(h) || py::hasattr(h, "__float__"))
    return py::float_(py::reinterpret_borrow<py::object>(h)).cast<double>();
  if (py::isinstance<py::str>(h)) return h.cast<std::string>();
  if (py::isinstance<py::dict>(h)) {
    nlohmann::json out = nlohmann::json::object();
    for (auto [key, value] : h.cast<py::dict>()) {
      if (!py::isinstance<py::str>(key))
        throw py::type_error(where + ": keys must be str, got " + type_name(key));
      const std::string k = key.cast<std::string>();
      out[k] = to_json(value, where + "[\"" + k + "\"]");
    }
    return out;
  }
  if (py::isinstance<py::list>(h) || py::isinstance<py::tuple>(h)) {
    nlohmann::json out = nlohmann::json::array();
    for (auto item : h) out.push_back(to_json(item, where));
    return out;
  }
  throw py::type_error(where + ": a " + type_name(h) + " has no JSON form");
}

// ---- Arguments ------------------------------------------------------------------------------

bool is_path(py::handle h) { return py::isinstance<py::str>(h) || py::hasattr(h, "__fspath__"); }

std::string fspath(py::handle h) {
  py::module_ os = py::module_::import("os");
  return py::str(os.attr("fsdecode")(os.attr("fspath")(h)));
}

mue::ExitPolicy policy_from(py::handle h, const std::string& what) {
  if (py::isinstance<mue::ExitPolicy>(h)) return h.cast<mue::ExitPolicy>();
  if (py::isinstance<py::dict>(h)) return mue::ExitPolicy::from_json(to_json(h, what), what);
  if (is_path(h)) return mue::ExitPolicy::load(fspath(h));
  throw py::type_error(what + " must be an ExitPolicy, a dict of its fields or the path of its " +
                       "JSON file, got " + type_name(h));
}

mue::GenerationSettings generation_from(py::handle h, mue::GenerationSettings base) {
  if (py::isinstance<mue::GenerationSettings>(h)) {
    base = h.cast<mue::GenerationSettings>();
  } else if (py::isinstance<py::dict>(h)) {
    // Fields not given keep the base's (the engine's default settings).
    for (auto [key, value] : h.cast<py::dict>()) {
      const std::string k = py::str(key);
      auto integer = [&](int& out) {
        if (!py::isinstance<py::int_>(value) || py::isinstance<py::bool_>(value))
          throw mue::Error("generation: field \"" + k + "\" must be an integer, got " +
                           std::string(py::repr(value)));
        out = value.cast<int>();
      };
      if (k == "beam_size") {
        integer(base.beam_size);
      } else if (k == "max_len") {
        integer(base.max_len);
      } else if (k == "min_len") {
        integer(base.min_len);
      } else if (k == "no_repeat_ngram_size") {
        integer(base.no_repeat_ngram_size);
      } else if (k == "length_penalty") {
        if (!py::isinstance<py::float_>(value) && !py::isinstance<py::int_>(value))
          throw mue::Error("generation: field \"length_penalty\" must be a number, got " +
                           std::string(py::repr(value)));
        base.length_penalty = value.cast<double>();
      } else {
        throw mue::Error("generation: unknown field \"" + k +
                         "\" (beam_size, max_len, min_len, no_repeat_ngram_size, length_penalty)");
      }
    }
  } else {
    throw py::type_error("generation must be a GenerationSettings or a dict of its fields, got " +
                         type_name(h));
  }
  base.validate();
  return base;
}

mue::GenerationSettings generation_of(const mue::CaptionTaskConfig& c) {
  mue::GenerationSettings g;
  g.beam_size = c.beam_size;
  g.max_len = c.max_len;
  g.min_len = c.min_len;
  g.no_repeat_ngram_size = c.no_repeat_ngram_size;
  g.length_penalty = c.length_penalty;
  return g;
}

// ---- Images ---------------------------------------------------------------------------------

// RGB pixels (rows top to bottom) to a PNG in memory. Lossless, so the engine decodes exactly
// these pixels; compression level 1 because the bytes only cross to the decoder.
std::vector<uint8_t> encode_png(const uint8_t* rgb, size_t width, size_t height,
                                size_t row_stride) {
  std::vector<uint8_t> out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    throw mue::Error("image array: libpng could not allocate its state");
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw mue::Error("image array: libpng could not encode it");
  }
  png_set_write_fn(
      png, &out,
      [](png_structp p, png_bytep data, png_size_t n) {
        auto* sink = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(p));
        sink->insert(sink->end(), data, data + n);
      },
      nullptr);
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), 8,
               PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(png, 1);
  png_set_filter(png, 0, PNG_FILTER_NONE);
  png_write_info(png, info);
  for (size_t y = 0; y < height; ++y)
    png_write_row(png, const_cast<uint8_t*>(rgb + y * row_stride));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

bool module_loaded(const char* name) {
  return py::module_::import("sys").attr("modules").contains(name);
}

PreparedImagePtr prepare_encoded(const mue::Engine& engine, const uint8_t* data, size_t size,
                                 const std::string& name) {
  py::gil_scoped_release release;
  return std::make_shared<mue::PreparedImage>(engine.prepare_image(data, size, name));
}

PreparedImagePtr prepare_pixels(const mue::Engine& engine, const uint8_t* rgb, size_t width,
                                size_t height, const std::string& name) {
  py::gil_scoped_release release;
  if (width == 0 || height == 0) throw mue::Error(name + ": the image is empty");
  if (width > 0x7fffffff || height > 0x7fffffff)
    throw mue::Error(name + ": the image is too large");
  std::vector<uint8_t> png = encode_png(rgb, width, height, width * 3);
  return std::make_shared<mue::PreparedImage>(engine.prepare_image(png.data(), png.size(), name));
}

// Any of the image forms to a prepared image. Decoding and preprocessing run without the GIL.
PreparedImagePtr prepare(const mue::Engine& engine, py::handle image) {
  if (py::isinstance<mue::PreparedImage>(image)) return image.cast<PreparedImagePtr>();
  if (is_path(image)) {
    const std::string path = fspath(image);
    py::gil_scoped_release release;
    return std::make_shared<mue::PreparedImage>(engine.prepare_image(path));
  }
  if (py::isinstance<py::bytes>(image) || py::isinstance<py::bytearray>(image) ||
      py::isinstance<py::memoryview>(image)) {
    // bytes are immutable and held by `encoded` while the GIL is released.
    py::bytes encoded = py::isinstance<py::bytes>(image)
                            ? py::reinterpret_borrow<py::bytes>(image)
                            : py::reinterpret_steal<py::bytes>(PyBytes_FromObject(image.ptr()));
    if (!encoded) throw py::error_already_set();
    char* data = nullptr;
    Py_ssize_t size = 0;
    if (PyBytes_AsStringAndSize(encoded.ptr(), &data, &size) != 0) throw py::error_already_set();
    return prepare_encoded(engine, reinterpret_cast<const uint8_t*>(data),
                           static_cast<size_t>(size), "<bytes>");
  }
  // PIL and NumPy are looked for only when loaded: an image of theirs means they are.
  if (module_loaded("PIL.Image") &&
      py::isinstance(image, py::module_::import("PIL.Image").attr("Image"))) {
    py::object rgb = image.attr("convert")("RGB");
    auto size = rgb.attr("size").cast<std::pair<size_t, size_t>>();
    py::bytes pixels = rgb.attr("tobytes")();
    std::string_view view = pixels;
    std::ostringstream name;
    name << "<PIL image " << size.first << "x" << size.second << ">";
    return prepare_pixels(engine, reinterpret_cast<const uint8_t*>(view.data()), size.first,
                          size.second, name.str());
  }
  if (module_loaded("numpy") && py::isinstance<py::array>(image)) {
    auto array = py::reinterpret_borrow<py::array>(image);
    std::ostringstream shape;
    shape << "(";
    for (py::ssize_t d = 0; d < array.ndim(); ++d) shape << (d ? ", " : "") << array.shape(d);
    shape << (array.ndim() == 1 ? ",)" : ")");
    const py::dtype dtype = array.dtype();
    if (dtype.kind() != 'u' || dtype.itemsize() != 1 || array.ndim() != 3 || array.shape(2) != 3)
      throw mue::Error("image array: must be uint8 of shape (height, width, 3) (RGB), got " +
                       std::string(py::str(array.dtype())) + " of shape " + shape.str());
    // C-contiguous, copied only when it is not already.
    auto pixels = py::array_t<uint8_t, py::array::c_style>::ensure(array);
    if (!pixels) throw py::error_already_set();
    std::ostringstream name;
    name << "<array " << array.shape(0) << "x" << array.shape(1) << ">";
    return prepare_pixels(engine, pixels.data(), static_cast<size_t>(array.shape(1)),
                          static_cast<size_t>(array.shape(0)), name.str());
  }
  throw py::type_error(
      "image must be a path (str or os.PathLike), bytes of an encoded JPEG or PNG, a NumPy uint8 "
      "array (height, width, 3), a PIL image or a PreparedImage, got " +
      type_name(image));
}

bool is_batch(py::handle h) { return py::isinstance<py::list>(h) || py::isinstance<py::tuple>(h); }

std::string text_argument(py::handle h, const char* what) {
  if (!py::isinstance<py::str>(h))
    throw py::type_error(std::string(what) + " must be a str, got " + type_name(h));
  return h.cast<std::string>();
}

// ---- The engine -----------------------------------------------------------------------------

struct PyEngine {
  std::unique_ptr<mue::Engine> engine;
  std::string model_dir;

  mue::CallOptions call_options(py::handle exit_policy, py::handle generation) const {
    mue::CallOptions call;
    if (!exit_policy.is_none()) {
      call.exit_policy = policy_from(exit_policy, "exit_policy");
      engine->check_exit_policy(*call.exit_policy);
    }
    if (!generation.is_none())
      call.generation = generation_from(generation, engine->default_generation());
    return call;
  }

  py::object caption(py::handle image, py::handle exit_policy, py::handle generation) const {
    const mue::CallOptions call = call_options(exit_policy, generation);
    if (!is_batch(image)) {
      PreparedImagePtr prepared = prepare(*engine, image);
      mue::CaptionResult r;
      {
        py::gil_scoped_release release;
        r = engine->caption(*prepared, call);
      }
      return py::cast(std::move(r));
    }
    std::vector<PreparedImagePtr> prepared;
    std::vector<const mue::PreparedImage*> images;
    for (auto item : image) {
      prepared.push_back(prepare(*engine, item));
      images.push_back(prepared.back().get());
    }
    std::vector<mue::CaptionResult> results;
    {
      py::gil_scoped_release release;
      results = engine->caption(images, call);
    }
    return py::cast(std::move(results));
  }

  // Any of image, hypothesis and premise may be a list (one entry per query; the others are
  // shared by all): the queries then run as one batch, which encodes each image once.
  py::object entail(py::handle image, py::handle hypothesis, py::handle premise,
                    py::handle exit_policy) const {
    const mue::CallOptions call = call_options(exit_policy, py::none());
    if (!is_batch(image) && !is_batch(hypothesis) && !is_batch(premise)) {
      const std::string h = text_argument(hypothesis, "hypothesis");
      const std::string p = text_argument(premise, "premise");
      PreparedImagePtr prepared = prepare(*engine, image);
      mue::EntailmentResult r;
      {
        py::gil_scoped_release release;
        r = engine->entail(*prepared, p, h, call);
      }
      return py::cast(std::move(r));
    }
    std::optional<size_t> n;
    std::string lengths;
    for (auto [arg, name] : {std::pair{image, "image"}, std::pair{hypothesis, "hypothesis"},
                             std::pair{premise, "premise"}}) {
      if (!is_batch(arg)) continue;
      const size_t len = py::len(arg);
      lengths += std::string(lengths.empty() ? "" : ", ") + name + " " + std::to_string(len);
      if (n && *n != len) throw mue::Error("entail: the lists differ in length: " + lengths);
      n = len;
    }
    auto item = [](py::handle arg, size_t i) -> py::object {
      return is_batch(arg) ? py::object(arg[py::int_(i)]) : py::reinterpret_borrow<py::object>(arg);
    };
    // One prepared image per distinct Python object.
    std::map<PyObject*, PreparedImagePtr> prepared;
    std::vector<mue::EntailmentQuery> queries(*n);
    for (size_t i = 0; i < *n; ++i) {
      py::object img = item(image, i);
      PreparedImagePtr& p = prepared[img.ptr()];
      if (!p) p = prepare(*engine, img);
      queries[i].image = p.get();
      queries[i].hypothesis = text_argument(item(hypothesis, i), "hypothesis");
      queries[i].premise = text_argument(item(premise, i), "premise");
    }
    std::vector<mue::EntailmentResult> results;
    {
      py::gil_scoped_release release;
      results = engine->entail(queries, call);
    }
    return py::cast(std::move(results));
  }
};

// ---- Reprs ----------------------------------------------------------------------------------

std::string number(double v, int digits = 4) {
  std::ostringstream s;
  s << std::setprecision(digits) << v;
  return s.str();
}

std::string repr_exits(const mue::ExitStatistics& e) {
  std::ostringstream s;
  s << "ExitStatistics(image " << e.image_layers << "/" << e.encoder_depth << ", text "
    << e.text_layers << "/" << e.encoder_depth << ", decoder " << number(e.mean_decoder_layers(), 3)
    << "/" << e.decoder_depth << ", expected time reduction "
    << number(100 * e.expected_time_reduction(), 3) << "%"
    << (e.image_reused ? ", image reused" : "") << ")";
  return s.str();
}

std::string repr_seconds(const mue::StageSeconds& t) {
  return "StageSeconds(preprocess=" + number(t.preprocess) + ", resnet=" + number(t.resnet) +
         ", image_stream=" + number(t.image_stream) + ", text_stream=" + number(t.text_stream) +
         ", decoder=" + number(t.decoder) + ", total=" + number(t.total) + ")";
}

std::string repr_fields(const nlohmann::json& fields) {
  std::string out;
  for (auto it = fields.begin(); it != fields.end(); ++it)
    out +=
        (out.empty() ? "" : ", ") + it.key() + "=" + std::string(py::repr(to_python(it.value())));
  return out;
}

nlohmann::json policy_fields() { return mue::ExitPolicy().to_json(); }

}  // namespace

PYBIND11_MODULE(_mue, m) {
  m.doc() = "mue's C++ engine (the package mue re-exports it; see help(mue))";
  m.attr("__version__") = MUE_VERSION;
  py::register_exception<mue::Error>(m, "Error", PyExc_ValueError);

  m.def(
      "machine_info", [] { return to_python(mue::machine_info().to_json()); },
      "The machine as benchmarks report it: CPU model and vector extensions, oneDNN's version and "
      "ISA, cores, OpenMP settings.");

  py::class_<mue::ExitPolicy>(m, "ExitPolicy", R"(MuE exit policy (mue/exit_policy.h).

Its fields are those of its JSON form (README, "Exit policy"): exit_threshold_image,
exit_threshold_text, exit_threshold_decoder, decoder_schedule, calm_beta, calm_tau,
fixed_depth_image, ... Read and set them as attributes; every change is checked, and an invalid
value raises mue.Error naming the field.

    ExitPolicy()                                   full depth (every threshold 1.0)
    ExitPolicy(exit_threshold_text=0.95)           fields as keywords
    ExitPolicy({"exit_threshold_text": 0.95})      or as a dict
    ExitPolicy.load("exit_policy.caption.json")    or from a JSON file)")
      .def(py::init([](py::object fields, py::kwargs kwargs) {
             nlohmann::json j = nlohmann::json::object();
             if (py::isinstance<mue::ExitPolicy>(fields))
               j = fields.cast<mue::ExitPolicy>().to_json();
             else if (py::isinstance<py::dict>(fields))
               j = to_json(fields, "ExitPolicy");
             else if (!fields.is_none())
               throw py::type_error("ExitPolicy(fields): fields must be a dict, got " +
                                    type_name(fields));
             for (auto [key, value] : kwargs) {
               const std::string k = py::str(key);
               j[k] = to_json(value, "ExitPolicy field \"" + k + "\"");
             }
             return mue::ExitPolicy::from_json(j, "ExitPolicy");
           }),
           py::arg("fields") = py::none())
      .def_static("full_depth", &mue::ExitPolicy::full_depth, "Every stack runs all its layers.")
      .def_static(
          "from_dict",
          [](py::dict fields) {
            return mue::ExitPolicy::from_json(to_json(fields, "ExitPolicy"), "ExitPolicy");
          },
          py::arg("fields"), "From a dict of JSON fields (missing ones keep their defaults).")
      .def_static(
          "load", [](py::object path) { return mue::ExitPolicy::load(fspath(path)); },
          py::arg("path"),
          "From a JSON file (a model's exit_policy.caption.json, mue-calibrate's).")
      .def(
          "to_dict", [](const mue::ExitPolicy& p) { return to_python(p.to_json()); },
          "Its JSON form as a dict.")
      .def(
          "save",
          [](const mue::ExitPolicy& p, py::object path) {
            const std::string file = fspath(path);
            std::ofstream out(file);
            out << p.to_json().dump(2) << "\n";
            if (!out) throw mue::Error("exit policy file " + file + ": cannot write");
          },
          py::arg("path"), "Writes its JSON form to a file (ExitPolicy.load reads it back).")
      .def_property_readonly_static(
          "fields",
          [](py::object) {
            py::list names;
            const nlohmann::json fields = policy_fields();
            for (auto it = fields.begin(); it != fields.end(); ++it) names.append(it.key());
            return names;
          },
          "The names of its fields.")
      .def("__getattr__",
           [](const mue::ExitPolicy& p, const std::string& name) {
             const nlohmann::json j = p.to_json();
             if (!j.contains(name))
               throw py::attribute_error("ExitPolicy has no field \"" + name + "\"");
             return to_python(j[name]);
           })
      .def("__setattr__",
           [](mue::ExitPolicy& p, const std::string& name, py::object value) {
             nlohmann::json j = p.to_json();
             if (!j.contains(name))
               throw py::attribute_error("ExitPolicy has no field \"" + name + "\"");
             j[name] = to_json(value, "ExitPolicy field \"" + name + "\"");
             p = mue::ExitPolicy::from_json(j, "ExitPolicy");
           })
      .def("__dir__",
           [](py::object self) {
             py::list names = py::module_::import("builtins").attr("object").attr("__dir__")(self);
             const nlohmann::json fields = policy_fields();
             for (auto it = fields.begin(); it != fields.end(); ++it) names.append(it.key());
             return names;
           })
      .def("__eq__",
           [](const mue::ExitPolicy& a, py::object b) {
             return py::isinstance<mue::ExitPolicy>(b) &&
                    a.to_json() == b.cast<mue::ExitPolicy>().to_json();
           })
      .def("__copy__", [](const mue::ExitPolicy& p) { return p; })
      .def("__deepcopy__", [](const mue::ExitPolicy& p, py::dict) { return p; })
      .def("__repr__",
           [](const mue::ExitPolicy& p) { return "ExitPolicy(" + repr_fields(p.to_json()) + ")"; })
      .def(py::pickle([](const mue::ExitPolicy& p) { return py::dict(to_python(p.to_json())); },
                      [](py::dict fields) {
                        return mue::ExitPolicy::from_json(to_json(fields, "ExitPolicy"),
                                                          "ExitPolicy");
                      }));

  py::class_<mue::GenerationSettings>(m, "GenerationSettings",
                                      "Beam-search settings for captioning (fairseq's).")
      .def(py::init(
          [](py::kwargs kwargs) { return generation_from(kwargs, mue::GenerationSettings{}); }))
      .def_readwrite("beam_size", &mue::GenerationSettings::beam_size, "1: greedy")
      .def_readwrite("max_len", &mue::GenerationSettings::max_len,
                     "generated tokens before the forced EOS")
      .def_readwrite("min_len", &mue::GenerationSettings::min_len)
      .def_readwrite("no_repeat_ngram_size", &mue::GenerationSettings::no_repeat_ngram_size)
      .def_readwrite("length_penalty", &mue::GenerationSettings::length_penalty)
      .def("validate", &mue::GenerationSettings::validate)
      .def("to_dict", [](const mue::GenerationSettings& g) { return to_python(g.to_json()); })
      .def("__eq__",
           [](const mue::GenerationSettings& a, py::object b) {
             return py::isinstance<mue::GenerationSettings>(b) &&
                    a.to_json() == b.cast<mue::GenerationSettings>().to_json();
           })
      .def("__repr__", [](const mue::GenerationSettings& g) {
        return "GenerationSettings(" + repr_fields(g.to_json()) + ")";
      });

  py::class_<mue::StageSeconds>(m, "StageSeconds", "Wall-clock seconds per stage of a call.")
      .def_readonly("preprocess", &mue::StageSeconds::preprocess)
      .def_readonly("resnet", &mue::StageSeconds::resnet)
      .def_readonly("image_stream", &mue::StageSeconds::image_stream)
      .def_readonly("text_stream", &mue::StageSeconds::text_stream)
      .def_readonly("decoder", &mue::StageSeconds::decoder)
      .def_readonly("total", &mue::StageSeconds::total)
      .def("to_dict", [](const mue::StageSeconds& s) { return to_python(s.to_json()); })
      .def("__repr__", &repr_seconds);

  py::class_<mue::ExitStatistics>(m, "ExitStatistics", "Where each stack stopped (layers used).")
      .def_readonly("image_layers", &mue::ExitStatistics::image_layers)
      .def_readonly("text_layers", &mue::ExitStatistics::text_layers)
      .def_readonly("decoder_layers", &mue::ExitStatistics::decoder_layers,
                    "per generated token (captioning) or one (entailment)")
      .def_readonly("encoder_depth", &mue::ExitStatistics::encoder_depth)
      .def_readonly("decoder_depth", &mue::ExitStatistics::decoder_depth)
      .def_readonly("image_reused", &mue::ExitStatistics::image_reused,
                    "the image stream came from the engine's cache")
      .def_property_readonly("expected_time_reduction",
                             &mue::ExitStatistics::expected_time_reduction,
                             "the paper's layer-count metric: 1 - (n_E + n_D) / (N_E + N_D)")
      .def_property_readonly("mean_decoder_layers", &mue::ExitStatistics::mean_decoder_layers)
      .def("to_dict", [](const mue::ExitStatistics& e) { return to_python(e.to_json()); })
      .def("__repr__", &repr_exits);

  py::class_<mue::CaptionResult>(m, "CaptionResult")
      .def_readonly("caption", &mue::CaptionResult::caption)
      .def_readonly("tokens", &mue::CaptionResult::tokens, "generated ids, ending with EOS")
      .def_readonly("score", &mue::CaptionResult::score, "length-normalised log probability")
      .def_readonly("exits", &mue::CaptionResult::exits)
      .def_readonly("seconds", &mue::CaptionResult::seconds)
      .def(
          "to_dict", [](const mue::CaptionResult& r) { return to_python(r.to_json()); },
          "The fields as the mue CLI's --json prints them.")
      .def("__repr__", [](const mue::CaptionResult& r) {
        return "CaptionResult(caption=" + std::string(py::repr(py::str(r.caption))) +
               ", score=" + number(r.score) + ", exits=" + repr_exits(r.exits) + ")";
      });

  py::class_<mue::EntailmentResult>(m, "EntailmentResult")
      .def_property_readonly(
          "label", [](const mue::EntailmentResult& r) { return std::string(r.label_name()); },
          "\"entailment\", \"neutral\" or \"contradiction\"")
      .def_readonly("p_entailment", &mue::EntailmentResult::p_entailment)
      .def_readonly("p_neutral", &mue::EntailmentResult::p_neutral)
      .def_readonly("p_contradiction", &mue::EntailmentResult::p_contradiction)
      .def_property_readonly(
          "probabilities",
          [](const mue::EntailmentResult& r) { return to_python(r.to_json()["probabilities"]); },
          "{label: probability} over the three answers")
      .def_readonly("exits", &mue::EntailmentResult::exits)
      .def_readonly("seconds", &mue::EntailmentResult::seconds)
      .def(
          "to_dict", [](const mue::EntailmentResult& r) { return to_python(r.to_json()); },
          "The fields as the mue CLI's --json prints them.")
      .def("__repr__", [](const mue::EntailmentResult& r) {
        return std::string("EntailmentResult(label='") + r.label_name() +
               "', probabilities={'entailment': " + number(r.p_entailment) +
               ", 'neutral': " + number(r.p_neutral) +
               ", 'contradiction': " + number(r.p_contradiction) +
               "}, exits=" + repr_exits(r.exits) + ")";
      });

  py::class_<mue::PreparedImage, PreparedImagePtr>(
      m, "PreparedImage",
      "An image decoded, resized and normalised for one engine's model (Engine.prepare_image); "
      "pass it to caption and entail instead of the image to prepare it once.")
      .def_readonly("name", &mue::PreparedImage::name)
      .def_readonly("seconds", &mue::PreparedImage::seconds, "time spent preparing it")
      .def_property_readonly("shape",
                             [](const mue::PreparedImage& p) {
                               return py::make_tuple(p.pixels.dim(0), p.pixels.dim(1),
                                                     p.pixels.dim(2));
                             })
      .def("__repr__", [](const mue::PreparedImage& p) {
        return "PreparedImage(name=" + std::string(py::repr(py::str(p.name))) + ", shape=(" +
               std::to_string(p.pixels.dim(0)) + ", " + std::to_string(p.pixels.dim(1)) + ", 3))";
      });

  py::class_<PyEngine>(m, "Engine", R"(A loaded model (mue::Engine). Immutable: one Engine serves
any number of Python threads at once, and calls release the GIL.

    engine = mue.Engine.load()                 # the default model
    engine.caption("scene.png")                # -> CaptionResult
    engine.entail(image, "the boot is green", premise="a blue shirt is in the top right")

An image is a path, bytes of an encoded JPEG or PNG, a NumPy uint8 array (height, width, 3),
a PIL image, or a PreparedImage (engine.prepare_image). Lists run as one batch.)")
      .def_static(
          "load",
          [](py::object model_dir, int threads, py::object exit_policy,
             const std::string& compute_type, int workers, py::object generation,
             std::optional<size_t> image_cache_bytes, std::optional<int64_t> max_image_pixels) {
            std::string dir, source = "model_dir";
            if (model_dir.is_none()) {
              auto found = py::module_::import("mue").attr("_default_model")().cast<py::tuple>();
              dir = found[0].cast<std::string>(), source = found[1].cast<std::string>();
            } else {
              dir = fspath(model_dir);
            }
            if (!std::filesystem::is_directory(dir))
              throw mue::Error("model directory " + dir + " (from " + source +
                               ") does not exist (pass model_dir or set MUE_MODEL)");
            mue::EngineOptions options;
            options.threads = threads;
            options.workers = workers;
            options.compute_type = mue::parse_compute_type(compute_type);
            if (!exit_policy.is_none())
              options.exit_policy = policy_from(exit_policy, "exit_policy");
            if (!generation.is_none()) {
              const mue::ModelConfig config =
                  mue::ModelConfig::load((std::filesystem::path(dir) / "config.json").string());
              options.generation = generation_from(generation, generation_of(config.caption));
            }
            if (image_cache_bytes) options.image_cache_bytes = *image_cache_bytes;
            if (max_image_pixels) options.max_image_pixels = *max_image_pixels;
            auto engine = std::make_unique<PyEngine>();
            engine->model_dir = dir;
            py::gil_scoped_release release;
            engine->engine = mue::Engine::load(dir, options);
            return engine;
          },
          py::arg("model_dir") = py::none(), py::kw_only(), py::arg("threads") = 0,
          py::arg("exit_policy") = py::none(), py::arg("compute_type") = "f32",
          py::arg("workers") = 0, py::arg("generation") = py::none(),
          py::arg("image_cache_bytes") = py::none(), py::arg("max_image_pixels") = py::none(),
          R"(Loads a model directory (None: $MUE_MODEL, else mue.default_model_dir()).

threads: OpenMP threads per call (0: all cores for models of width 512 and more, one for
narrower ones). workers: N > 0 runs the samples of each call on N single-threaded workers.
exit_policy: the default for every call (ExitPolicy, dict or JSON file; None: full depth).
compute_type: "f32", "bf16", "int8" or "auto". generation: the default captioning settings
(GenerationSettings or a dict of the fields to change from the model's).)")
      .def_property_readonly("model_dir", [](const PyEngine& e) { return e.model_dir; })
      .def_property_readonly(
          "config",
          [](const PyEngine& e) {
            const mue::ModelConfig& c = e.engine->config();
            py::dict d;
            d["name"] = c.name;
            d["encoder_mode"] = mue::encoder_mode_name(c.encoder_mode);
            d["d_model"] = c.d_model;
            d["encoder_layers"] = c.encoder_layers;
            d["decoder_layers"] = c.decoder_layers;
            d["attention_heads"] = c.attention_heads;
            d["image_size"] = py::make_tuple(c.image_height, c.image_width);
            d["vocab_size"] = c.vocab_size;
            return d;
          },
          "The model's main settings, as `mue info` prints them.")
      .def_property_readonly("threads_per_call",
                             [](const PyEngine& e) { return e.engine->threads_per_call(); })
      .def_property_readonly(
          "compute_type",
          [](const PyEngine& e) { return mue::compute_type_name(e.engine->compute_type()); })
      .def_property_readonly("weight_bytes",
                             [](const PyEngine& e) { return e.engine->weight_bytes(); })
      .def_property_readonly("default_exit_policy",
                             [](const PyEngine& e) { return e.engine->default_exit_policy(); })
      .def_property_readonly("default_generation",
                             [](const PyEngine& e) { return e.engine->default_generation(); })
      .def(
          "check_exit_policy",
          [](const PyEngine& e, py::object policy) {
            e.engine->check_exit_policy(policy_from(policy, "policy"));
          },
          py::arg("policy"), "Raises mue.Error if the policy is invalid or deeper than the model.")
      .def(
          "prepare_image",
          [](const PyEngine& e, py::object image) { return prepare(*e.engine, image); },
          py::arg("image"), "Decodes and preprocesses an image once, for several calls.")
      .def("caption", &PyEngine::caption, py::arg("image"), py::kw_only(),
           py::arg("exit_policy") = py::none(), py::arg("generation") = py::none(),
           R"(Captions an image (a list of images: a batch, and a list of results).

exit_policy and generation override the engine's defaults for this call.)")
      .def("entail", &PyEngine::entail, py::arg("image"), py::arg("hypothesis"),
           py::arg("premise") = "", py::kw_only(), py::arg("exit_policy") = py::none(),
           R"(Visual entailment: does the image (with the premise, if any) entail the hypothesis?

Any of image, hypothesis and premise may be a list, one entry per query, the others shared:
the queries run as one batch (each image encoded once) and a list of results comes back.)")
      .def(
          "image_cache_stats",
          [](const PyEngine& e) {
            const mue::ImageCacheStats s = e.engine->image_cache_stats();
            py::dict d;
            d["hits"] = s.hits;
            d["entries"] = s.entries;
            d["bytes"] = s.bytes;
            return d;
          },
          "The image-stream cache (decomposed models): hits, entries, bytes.")
      .def("clear_image_cache", [](const PyEngine& e) { e.engine->clear_image_cache(); })
      .def("caption_prompt", [](const PyEngine& e) { return e.engine->caption_prompt(); })
      .def(
          "entailment_prompt",
          [](const PyEngine& e, const std::string& hypothesis, const std::string& premise) {
            return e.engine->entailment_prompt(premise, hypothesis);
          },
          py::arg("hypothesis"), py::arg("premise") = "")
      .def(
          "decode_tokens",
          [](const PyEngine& e, const std::vector<int64_t>& tokens) {
            return e.engine->decode_tokens(tokens);
          },
          py::arg("tokens"))
      .def("__repr__", [](const PyEngine& e) {
        return "Engine(model_dir=" + std::string(py::repr(py::str(e.model_dir))) +
               ", name=" + std::string(py::repr(py::str(e.engine->config().name))) +
               ", compute_type='" + mue::compute_type_name(e.engine->compute_type()) +
               "', threads_per_call=" + std::to_string(e.engine->threads_per_call()) + ")";
      });
}
