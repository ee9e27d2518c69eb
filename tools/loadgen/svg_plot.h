// Tiny SVG line-chart renderer for `glimpse loadgen`: latency CDFs and throughput/latency
// against concurrency or request rate, written as standalone .svg files that a browser opens
// directly or a markdown report embeds with ![](plot.svg). No dependency beyond the standard
// library, so that a benchmark run never needs a plotting stack (Python, gnuplot) to be useful.
//
// Output contract (tests and anyone post-processing a plot may rely on it):
//   - one `<rect class="plot-area" x=".." y=".." width=".." height="..">` for the data region;
//   - one `<polyline class="series" data-series="i" ... points="x,y x,y ...">` per series that
//     has at least one drawable point, in input order, every point inside the plot area;
//   - `<circle class="marker" data-series="i" cx=".." cy="..">` per point when markers are on
//     (and always for a series of a single point, which a polyline cannot show);
//   - `<text class="x-tick" x=".." ..>label</text>` / `class="y-tick"` per tick, the label being
//     the tick's value as a plain decimal or `1e-7`-style number (strtod parses it);
//   - `<text class="legend-entry" ..>name</text>` per named series.
//
// Thread-safety: pure functions with no shared state; safe to call from any thread.
#ifndef GLIMPSE_TOOLS_LOADGEN_SVG_PLOT_H_
#define GLIMPSE_TOOLS_LOADGEN_SVG_PLOT_H_

#include <cstddef>
#include <string>
#include <vector>

namespace glimpse::tools::loadgen {

struct PlotSeries {
  std::string name;          // Legend entry; an empty name gets no legend entry.
  std::vector<double> x, y;  // Same length (extra entries of the longer one are ignored);
                             // points drawn in the given order, joined by lines.
};

struct ChartOptions {
  std::string title;
  std::string x_label, y_label;
  bool log_x = false;   // Log10 x axis (e.g. concurrency 1,4,16,64). Non-positive x dropped.
  bool log_y = false;   // Log10 y axis. Non-positive y dropped.
  bool markers = true;  // A small circle at each point (off for CDFs with many points).
  bool step = false;    // Draw as a step function (for empirical CDFs): horizontal, then up.
  int width = 720, height = 440;  // Pixels; clamped up to a usable minimum (160 x 120).
};

// A complete standalone SVG document (starts with `<svg xmlns="http://www.w3.org/2000/svg"`),
// with axes, "nice" ticks (1-2-5 steps on linear axes, decades on log axes) that cover the data,
// tick labels, grid lines, axis labels, title and a legend; distinct colours per series (a fixed
// palette of 10, cycling). NaN/inf points are skipped. Empty input, or no drawable point at all,
// renders a valid SVG that says "no data". Text is XML-escaped. A single point or all-equal
// values get a padded range rather than a division by zero.
std::string RenderLineChartSvg(const ChartOptions& options, const std::vector<PlotSeries>& series);

// Empirical CDF of `values`: x = the sorted values, y = i/n for i = 1..n (y in (0,1], not
// percent). NaNs are dropped (infinities are kept and count in n; the renderer skips them).
// With more than max_points values (max_points < 2 counts as 2), keeps an evenly spaced subset
// of ranks that always includes the first and last point.
PlotSeries CdfSeries(std::string name, std::vector<double> values, size_t max_points = 500);

// Writes text to path, replacing any existing file (parent directories must exist). Returns
// false on any error.
bool WriteTextFile(const std::string& path, const std::string& text);

}  // namespace glimpse::tools::loadgen

#endif  // GLIMPSE_TOOLS_LOADGEN_SVG_PLOT_H_
