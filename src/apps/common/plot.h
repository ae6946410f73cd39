// A plot of quality against time, one labelled point per setting (mue-bench --svg), written as
// SVG by hand so that the apps need no plotting library.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace mue::apps {

enum class PlotX { kMeasuredReduction, kMeanMs };

// "reduction" or "ms"; anything else is an error naming --plot-x.
PlotX parse_plot_x(const std::string& text);

// Quality (y, x100) against the measured time reduction or the mean ms (x), from the setting
// summaries of report.h; full depth in another colour.
void write_svg(const std::filesystem::path& path, const nlohmann::json& settings,
               const std::string& quality_metric, PlotX x_axis, const std::string& title);

}  // namespace mue::apps
