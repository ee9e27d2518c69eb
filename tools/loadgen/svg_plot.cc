#include "tools/loadgen/svg_plot.h"

#include <algorithm>
#include <array>
#include <cfloat>
#include <charconv>
#include <cmath>
#include <fstream>
#include <string_view>
#include <utility>

namespace glimpse::tools::loadgen {
namespace {

// Tableau 10: distinguishable on screen and in print; series beyond ten reuse colours.
constexpr std::array<const char*, 10> kPalette = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                                  "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                                                  "#bcbd22", "#17becf"};
// Rough advance of a 12px sans-serif glyph; only used to reserve room for labels and legend,
// since the renderer cannot measure text.
constexpr double kCharWidth = 7.0;

std::string Escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
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
      case '\'':
        out += "&apos;";
        break;
      default:
        // XML 1.0 forbids C0 controls other than tab/LF/CR even as character references, and a
        // browser refuses the whole document over one, so a stray control byte becomes a space.
        out +=
            (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r') ? ' ' : c;
    }
  }
  return out;
}

// Pixel coordinate with two decimals: precise enough for any screen, locale-independent.
std::string Px(double v) {
  if (std::fabs(v) < 0.005) v = 0;  // No "-0.00".
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed, 2);
  return std::string(buf, result.ptr);
}

struct Tick {
  double u;  // Position in axis units.
  std::string label;
};

// One axis: the range in axis units (the value itself, or log10 of it on a log axis) and ticks.
// Invariant: lo < hi, both finite, and every drawable data value lies in [lo, hi].
struct Axis {
  bool log = false;
  double lo = 0, hi = 1;
  std::vector<Tick> ticks;

  double Units(double v) const { return log ? std::log10(v) : v; }
  // Position of a data value as a fraction of the axis length. Halving the operands keeps the
  // arithmetic finite even when the range spans most of the doubles (-1e308 .. 1e308).
  double Fraction(double v) const { return FractionOfUnits(Units(v)); }
  double FractionOfUnits(double u) const {
    return std::clamp((u / 2 - lo / 2) / (hi / 2 - lo / 2), 0.0, 1.0);
  }
};

// Smallest of {1, 2, 5} x 10^k that is >= raw (raw > 0).
double NiceStep(double raw) {
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

// Labels on one axis share a style chosen by the step, so they read as one scale: plain
// decimals with just enough places for the step, or scientific notation for very large or small
// steps. Either way strtod parses the label back to the tick value.
std::string LinearLabel(double t, double step) {
  if (t == 0) return "0";
  const int step_exp = static_cast<int>(std::floor(std::log10(step) + 1e-9));
  char buf[64];
  std::to_chars_result result;
  if (step_exp >= 7 || step_exp <= -6) {
    const int digits = static_cast<int>(std::floor(std::log10(std::fabs(t)))) - step_exp + 1;
    result = std::to_chars(buf, buf + sizeof(buf), t, std::chars_format::general,
                           std::clamp(digits, 1, 17));
  } else {
    result =
        std::to_chars(buf, buf + sizeof(buf), t, std::chars_format::fixed, std::max(0, -step_exp));
  }
  return std::string(buf, result.ptr);
}

// Linear axis over [lo, hi] (finite, lo <= hi) widened to multiples of a 1-2-5 step that gives
// about five intervals (always between 2 and 7), so that the first and last ticks bracket the
// data.
Axis LinearAxis(double lo, double hi) {
  if (!(hi > lo)) {
    // A single value: pad by 10% (or 1 around zero) rather than divide by a zero range.
    const double pad = lo == 0 ? 1 : std::max(std::fabs(lo) * 0.1, DBL_MIN);
    lo = std::max(lo - pad, -DBL_MAX);
    hi = std::min(hi + pad, DBL_MAX);
  }
  Axis axis{.log = false, .lo = lo, .hi = hi, .ticks = {}};
  const double step = NiceStep((hi / 2 - lo / 2) / 2.5);
  // Ticks are integer multiples k * step: multiplying, not accumulating or re-deriving the start
  // from a rounded bound, keeps the end ticks exactly on the axis ends.
  double k_lo = std::floor(lo / step), k_hi = std::ceil(hi / step);
  if (std::isfinite(k_lo * step) && std::isfinite(k_hi * step)) {
    axis.lo = k_lo * step;
    axis.hi = k_hi * step;
  } else {  // Near +-DBL_MAX the rounded-out range overflows: keep the data range, ticks inside.
    k_lo = std::ceil(lo / step);
    k_hi = std::floor(hi / step);
  }
  // At most 7 intervals by construction; the cap only bounds the loop when k_lo + i cannot be
  // represented (a range far below the values' resolution, e.g. 1e16 .. 1e16 + 2).
  for (int i = 0; i <= 12 && k_lo + i <= k_hi; ++i) {
    const double t = (k_lo + i) * step;
    axis.ticks.push_back({t, LinearLabel(t, step)});
  }
  return axis;
}

// "1", "10", "0.001" for the decades people read at a glance, "1e9" beyond.
std::string DecadeLabel(int e) {
  if (e >= 0 && e <= 6) return "1" + std::string(e, '0');
  if (e < 0 && e >= -4) return "0." + std::string(-e - 1, '0') + "1";
  return "1e" + std::to_string(e);
}

// Log axis over [lo, hi] (finite, 0 < lo <= hi): whole decades, a tick on every one or, past
// eight decades, on every k-th.
Axis LogAxis(double lo, double hi) {
  double e_lo = std::floor(std::log10(lo));
  double e_hi = std::ceil(std::log10(hi));
  if (e_hi == e_lo) {  // One exact power of ten: centre it rather than sit on an edge.
    e_lo -= 1;
    e_hi += 1;
  }
  const double every = std::max(1.0, std::ceil((e_hi - e_lo) / 8));
  e_lo = std::floor(e_lo / every) * every;
  e_hi = std::ceil(e_hi / every) * every;
  Axis axis{.log = true, .lo = e_lo, .hi = e_hi, .ticks = {}};
  for (double e = e_lo; e <= e_hi; e += every) {
    axis.ticks.push_back({e, DecadeLabel(static_cast<int>(e))});
  }
  return axis;
}

// Unlabelled grid positions (axis units) at 2..9 x 10^k on a log axis of few decades, where
// reading a value between decade lines would otherwise be guesswork.
std::vector<double> MinorGrid(const Axis& axis) {
  std::vector<double> minor;
  if (!axis.log || axis.hi - axis.lo > 4) return minor;
  for (double e = axis.lo; e < axis.hi; ++e) {
    for (int m = 2; m <= 9; ++m) minor.push_back(e + std::log10(m));
  }
  return minor;
}

bool Drawable(double v, bool log) { return std::isfinite(v) && (!log || v > 0); }

struct Point {
  double x, y;
};

}  // namespace

std::string RenderLineChartSvg(const ChartOptions& options, const std::vector<PlotSeries>& series) {
  // Drawable points per series, and the data range over all of them.
  std::vector<std::vector<Point>> points(series.size());
  double x_min = INFINITY, x_max = -INFINITY, y_min = INFINITY, y_max = -INFINITY;
  for (size_t i = 0; i < series.size(); ++i) {
    const size_t n = std::min(series[i].x.size(), series[i].y.size());
    for (size_t k = 0; k < n; ++k) {
      const double x = series[i].x[k], y = series[i].y[k];
      if (!Drawable(x, options.log_x) || !Drawable(y, options.log_y)) continue;
      points[i].push_back({x, y});
      x_min = std::min(x_min, x);
      x_max = std::max(x_max, x);
      y_min = std::min(y_min, y);
      y_max = std::max(y_max, y);
    }
  }
  const bool has_data = x_min <= x_max;

  const double width = std::max(options.width, 160);
  const double height = std::max(options.height, 120);
  const std::string w = std::to_string(static_cast<int>(width));
  const std::string h = std::to_string(static_cast<int>(height));
  std::string out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + w + "\" height=\"" + h +
                    "\" viewBox=\"0 0 " + w + " " + h +
                    "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  if (!options.title.empty()) {
    out += "<text class=\"title\" x=\"" + Px(width / 2) +
           "\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">" + Escape(options.title) +
           "</text>\n";
  }
  if (!has_data) {
    out += "<text class=\"no-data\" x=\"" + Px(width / 2) + "\" y=\"" + Px(height / 2) +
           "\" text-anchor=\"middle\" fill=\"#666\">no data</text>\n</svg>\n";
    return out;
  }

  const Axis x_axis = options.log_x ? LogAxis(x_min, x_max) : LinearAxis(x_min, x_max);
  const Axis y_axis = options.log_y ? LogAxis(y_min, y_max) : LinearAxis(y_min, y_max);

  // Layout: margins sized from the text they hold; each capped at a third of the canvas so the
  // plot area keeps a positive size whatever the labels.
  size_t y_label_chars = 0, name_chars = 0;
  for (const Tick& t : y_axis.ticks) y_label_chars = std::max(y_label_chars, t.label.size());
  for (const PlotSeries& s : series) name_chars = std::max(name_chars, s.name.size());
  const double left = std::min(width / 3, 18 + kCharWidth * static_cast<double>(y_label_chars) +
                                              (options.y_label.empty() ? 0 : 20));
  const double legend =
      name_chars == 0 ? 0 : std::min(width / 3, 36 + kCharWidth * static_cast<double>(name_chars));
  const double x0 = left, x1 = width - 16 - legend;
  const double y0 = options.title.empty() ? 16 : 40;
  const double y1 = height - (options.x_label.empty() ? 28 : 50);
  auto map_x = [&](double v) { return x0 + x_axis.Fraction(v) * (x1 - x0); };
  auto map_y = [&](double v) { return y1 - y_axis.Fraction(v) * (y1 - y0); };
  auto tick_x = [&](double u) { return x0 + x_axis.FractionOfUnits(u) * (x1 - x0); };
  auto tick_y = [&](double u) { return y1 - y_axis.FractionOfUnits(u) * (y1 - y0); };
  auto grid_x = [&](double u, const char* colour) {
    const std::string x = Px(tick_x(u));
    out += "<line x1=\"" + x + "\" y1=\"" + Px(y0) + "\" x2=\"" + x + "\" y2=\"" + Px(y1) +
           "\" stroke=\"" + colour + "\"/>\n";
  };
  auto grid_y = [&](double u, const char* colour) {
    const std::string y = Px(tick_y(u));
    out += "<line x1=\"" + Px(x0) + "\" y1=\"" + y + "\" x2=\"" + Px(x1) + "\" y2=\"" + y +
           "\" stroke=\"" + colour + "\"/>\n";
  };

  out += "<g class=\"grid\" stroke-width=\"1\">\n";
  for (const double u : MinorGrid(x_axis)) grid_x(u, "#f3f3f3");
  for (const double u : MinorGrid(y_axis)) grid_y(u, "#f3f3f3");
  for (const Tick& t : x_axis.ticks) grid_x(t.u, "#e0e0e0");
  for (const Tick& t : y_axis.ticks) grid_y(t.u, "#e0e0e0");
  out += "</g>\n<rect class=\"plot-area\" x=\"" + Px(x0) + "\" y=\"" + Px(y0) + "\" width=\"" +
         Px(x1 - x0) + "\" height=\"" + Px(y1 - y0) + "\" fill=\"none\" stroke=\"#444\"/>\n";
  out += "<g class=\"x-ticks\" text-anchor=\"middle\" fill=\"#333\">\n";
  for (const Tick& t : x_axis.ticks) {
    out += "<text class=\"x-tick\" x=\"" + Px(tick_x(t.u)) + "\" y=\"" + Px(y1 + 16) + "\">" +
           Escape(t.label) + "</text>\n";
  }
  out += "</g>\n<g class=\"y-ticks\" text-anchor=\"end\" fill=\"#333\">\n";
  for (const Tick& t : y_axis.ticks) {
    // dy centres the digits on the grid line while y stays the tick's exact position.
    out += "<text class=\"y-tick\" x=\"" + Px(x0 - 6) + "\" y=\"" + Px(tick_y(t.u)) +
           "\" dy=\"0.35em\">" + Escape(t.label) + "</text>\n";
  }
  out += "</g>\n";
  if (!options.x_label.empty()) {
    out += "<text class=\"x-label\" x=\"" + Px((x0 + x1) / 2) + "\" y=\"" + Px(height - 12) +
           "\" text-anchor=\"middle\">" + Escape(options.x_label) + "</text>\n";
  }
  if (!options.y_label.empty()) {
    const std::string cy = Px((y0 + y1) / 2);
    out += "<text class=\"y-label\" x=\"16\" y=\"" + cy +
           "\" text-anchor=\"middle\" transform=\"rotate(-90 16 " + cy + ")\">" +
           Escape(options.y_label) + "</text>\n";
  }

  for (size_t i = 0; i < series.size(); ++i) {
    if (points[i].empty()) continue;
    const std::string color = kPalette[i % kPalette.size()];
    const std::string id = std::to_string(i);
    std::string coords;
    for (size_t k = 0; k < points[i].size(); ++k) {
      const std::string px = Px(map_x(points[i][k].x)), py = Px(map_y(points[i][k].y));
      // A step holds the previous y up to the new x, then jumps: the shape of an empirical CDF.
      if (options.step && k > 0) coords += px + "," + Px(map_y(points[i][k - 1].y)) + " ";
      coords += px + "," + py + (k + 1 < points[i].size() ? " " : "");
    }
    out += "<polyline class=\"series\" data-series=\"" + id + "\" fill=\"none\" stroke=\"" + color +
           "\" stroke-width=\"1.75\" stroke-linejoin=\"round\" points=\"" + coords + "\"/>\n";
    // A lone point has no line to show it, so it gets a marker regardless.
    if (options.markers || points[i].size() == 1) {
      for (const Point& p : points[i]) {
        out += "<circle class=\"marker\" data-series=\"" + id + "\" cx=\"" + Px(map_x(p.x)) +
               "\" cy=\"" + Px(map_y(p.y)) + "\" r=\"2.5\" fill=\"" + color + "\"/>\n";
      }
    }
  }

  out += "<g class=\"legend\">\n";
  double entry_y = y0 + 12;
  for (size_t i = 0; i < series.size(); ++i) {
    if (series[i].name.empty()) continue;
    const std::string y = Px(entry_y);
    out += "<line x1=\"" + Px(x1 + 12) + "\" y1=\"" + y + "\" x2=\"" + Px(x1 + 30) + "\" y2=\"" +
           y + "\" stroke=\"" + kPalette[i % kPalette.size()] + "\" stroke-width=\"2.5\"/>\n";
    out += "<text class=\"legend-entry\" x=\"" + Px(x1 + 36) + "\" y=\"" + Px(entry_y + 4) + "\">" +
           Escape(series[i].name) + "</text>\n";
    entry_y += 18;
  }
  out += "</g>\n</svg>\n";
  return out;
}

PlotSeries CdfSeries(std::string name, std::vector<double> values, size_t max_points) {
  std::erase_if(values, [](double v) { return std::isnan(v); });
  std::sort(values.begin(), values.end());
  PlotSeries cdf;
  cdf.name = std::move(name);
  const size_t n = values.size();
  const size_t m = std::min(n, std::max<size_t>(max_points, 2));
  cdf.x.reserve(m);
  cdf.y.reserve(m);
  for (size_t k = 0; k < m; ++k) {
    // Rank k*(n-1)/(m-1) rounded to nearest: k = 0 and k = m-1 give the first and last value,
    // and since (n-1)/(m-1) >= 1 the ranks strictly increase, so the subset stays a CDF.
    const size_t rank = m == 1 ? 0 : (k * (n - 1) + (m - 1) / 2) / (m - 1);
    cdf.x.push_back(values[rank]);
    cdf.y.push_back(static_cast<double>(rank + 1) / static_cast<double>(n));
  }
  return cdf;
}

bool WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) return false;
  file.write(text.data(), static_cast<std::streamsize>(text.size()));
  file.close();
  return !file.fail();
}

}  // namespace glimpse::tools::loadgen
