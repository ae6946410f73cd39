#include "apps/common/plot.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <vector>

#include "apps/common/options.h"
#include "apps/common/report.h"

namespace mue::apps {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// Tick positions at 1, 2 or 5 times a power of ten covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int target = 6) {
  double span = std::max(hi - lo, 1e-12);
  double raw = span / target, power = std::pow(10.0, std::floor(std::log10(raw)));
  double step = power;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * power >= raw) {
      step = m * power;
      break;
    }
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step) * step; t <= hi + 1e-9 * span; t += step)
    ticks.push_back(std::abs(t) < 1e-12 * step ? 0.0 : t);
  return ticks;
}

}  // namespace

PlotX parse_plot_x(const std::string& text) {
  if (text == "reduction") return PlotX::kMeasuredReduction;
  if (text == "ms") return PlotX::kMeanMs;
  throw Error("--plot-x must be reduction or ms, got \"" + text + "\"");
}

void write_svg(const fs::path& path, const json& settings, const std::string& quality_metric,
               PlotX x_axis, const std::string& title) {
  struct Point {
    double x, y;
    std::string name;
    bool baseline;
  };
  std::vector<Point> points;
  for (const json& s : settings) {
    const json& t = s["time"];
    if (!t.contains("mean_ms")) continue;
    double x = x_axis == PlotX::kMeanMs ? t["mean_ms"].get<double>()
                                        : 100 * t["measured_time_reduction"].get<double>();
    points.push_back({x, 100 * s["metrics"][quality_metric].get<double>(),
                      s["name"].get<std::string>(), s["is_baseline"].get<bool>()});
  }
  if (points.empty()) throw Error("no timed setting to plot in " + path.string());
  double x_lo = points[0].x, x_hi = x_lo, y_lo = points[0].y, y_hi = y_lo;
  for (const Point& p : points) {
    x_lo = std::min(x_lo, p.x), x_hi = std::max(x_hi, p.x);
    y_lo = std::min(y_lo, p.y), y_hi = std::max(y_hi, p.y);
  }
  auto pad = [](double& lo, double& hi) {
    double margin = std::max((hi - lo) * 0.08, std::max(std::abs(hi), 1.0) * 0.02);
    lo -= margin, hi += margin;
  };
  pad(x_lo, x_hi);
  pad(y_lo, y_hi);
  constexpr double kWidth = 760, kHeight = 500, kLeft = 80, kRight = 40, kTop = 50, kBottom = 60;
  auto sx = [&](double x) {
    return kLeft + (x - x_lo) / (x_hi - x_lo) * (kWidth - kLeft - kRight);
  };
  auto sy = [&](double y) {
    return kHeight - kBottom - (y - y_lo) / (y_hi - y_lo) * (kHeight - kTop - kBottom);
  };
  std::ofstream out(path);
  if (!out) throw Error("cannot write the plot " + path.string());
  out << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
      << "\" viewBox=\"0 0 " << kWidth << " " << kHeight
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << kWidth / 2 << "\" y=\"28\" text-anchor=\"middle\" font-size=\"15\">"
      << xml_escape(title) << "</text>\n";
  out << std::fixed << std::setprecision(2);
  for (double t : nice_ticks(x_lo, x_hi)) {
    out << "<line x1=\"" << sx(t) << "\" y1=\"" << kTop << "\" x2=\"" << sx(t) << "\" y2=\""
        << kHeight - kBottom << "\" stroke=\"#e4e4e4\"/>\n"
        << "<text x=\"" << sx(t) << "\" y=\"" << kHeight - kBottom + 18
        << "\" text-anchor=\"middle\">" << short_number(t) << "</text>\n";
  }
  for (double t : nice_ticks(y_lo, y_hi)) {
    out << "<line x1=\"" << kLeft << "\" y1=\"" << sy(t) << "\" x2=\"" << kWidth - kRight
        << "\" y2=\"" << sy(t) << "\" stroke=\"#e4e4e4\"/>\n"
        << "<text x=\"" << kLeft - 8 << "\" y=\"" << sy(t) + 4 << "\" text-anchor=\"end\">"
        << short_number(t) << "</text>\n";
  }
  out << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << kWidth - kLeft - kRight
      << "\" height=\"" << kHeight - kTop - kBottom << "\" fill=\"none\" stroke=\"black\"/>\n";
  std::string x_label = x_axis == PlotX::kMeanMs
                            ? "wall clock per sample (ms, mean)"
                            : "measured wall-clock reduction against full depth (%)";
  out << "<text x=\"" << (kLeft + kWidth - kRight) / 2 << "\" y=\"" << kHeight - 18
      << "\" text-anchor=\"middle\">" << x_label << "</text>\n"
      << "<text transform=\"translate(22," << (kTop + kHeight - kBottom) / 2
      << ") rotate(-90)\" text-anchor=\"middle\">"
      << (quality_metric == "accuracy" ? std::string("accuracy (%)")
                                       : xml_escape(metric_label(quality_metric)) + " (x100)")
      << "</text>\n";
  for (const Point& p : points) {
    const char* colour = p.baseline ? "#d62728" : "#1f77b4";
    const bool left_half = sx(p.x) < kWidth / 2;  // labels point inwards, never off the edge
    out << "<circle cx=\"" << sx(p.x) << "\" cy=\"" << sy(p.y) << "\" r=\"4.5\" fill=\"" << colour
        << "\"><title>" << xml_escape(p.name) << ": " << short_number(p.x) << ", "
        << short_number(p.y) << "</title></circle>\n"
        << "<text x=\"" << (left_half ? sx(p.x) + 7 : sx(p.x) - 7) << "\" y=\"" << sy(p.y) - 6
        << "\" text-anchor=\"" << (left_half ? "start" : "end") << "\" fill=\"" << colour
        << "\" font-size=\"10\">" << xml_escape(p.name) << "</text>\n";
  }
  out << "</svg>\n";
  if (!out) throw Error("error writing the plot " + path.string());
}

}  // namespace mue::apps
