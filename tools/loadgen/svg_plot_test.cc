#include "tools/loadgen/svg_plot.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace glimpse::tools::loadgen {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Checks that `svg` is one well-formed XML element: the `<svg xmlns=...` root first, every
// element closed in order, nothing after the root but whitespace, and every `&` an entity.
::testing::AssertionResult IsWellFormedSvg(const std::string& svg) {
  if (svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0) != 0) {
    return ::testing::AssertionFailure() << "does not start with the svg root: " << svg;
  }
  std::vector<std::string> open;
  bool root_closed = false;
  for (size_t i = 0; i < svg.size(); ++i) {
    if (svg[i] == '&') {
      static const std::regex kEntity("&(amp|lt|gt|quot|apos|#[0-9]+);");
      if (!std::regex_search(svg.substr(i, 8), kEntity, std::regex_constants::match_continuous)) {
        return ::testing::AssertionFailure() << "bare & at " << i;
      }
    }
    if (svg[i] == '>') return ::testing::AssertionFailure() << "stray > at " << i;
    if (svg[i] != '<') {
      if (root_closed && !std::isspace(static_cast<unsigned char>(svg[i]))) {
        return ::testing::AssertionFailure() << "content after the root at " << i;
      }
      continue;
    }
    if (root_closed) return ::testing::AssertionFailure() << "element after the root at " << i;
    const size_t end = svg.find('>', i);
    if (end == std::string::npos) return ::testing::AssertionFailure() << "unterminated tag";
    const std::string tag = svg.substr(i + 1, end - i - 1);
    if (tag.find('<') != std::string::npos) {
      return ::testing::AssertionFailure() << "< inside tag: " << tag;
    }
    if (std::count(tag.begin(), tag.end(), '"') % 2 != 0) {
      return ::testing::AssertionFailure() << "unbalanced quotes: " << tag;
    }
    if (tag.starts_with("/")) {
      const std::string name = tag.substr(1);
      if (open.empty() || open.back() != name) {
        return ::testing::AssertionFailure()
               << "</" << name << "> closes " << (open.empty() ? "nothing" : open.back());
      }
      open.pop_back();
      root_closed = open.empty();
    } else if (!tag.ends_with("/")) {
      open.push_back(tag.substr(0, tag.find_first_of(" \n\t")));
    }
    i = end;
  }
  if (!open.empty()) return ::testing::AssertionFailure() << "<" << open.back() << "> not closed";
  if (!root_closed) return ::testing::AssertionFailure() << "no root element";
  return ::testing::AssertionSuccess();
}

struct Pt {
  double x, y;
};

struct Rect {
  double x0, y0, x1, y1;
  bool Contains(const Pt& p) const {
    return p.x >= x0 - 1e-9 && p.x <= x1 + 1e-9 && p.y >= y0 - 1e-9 && p.y <= y1 + 1e-9;
  }
};

Rect PlotArea(const std::string& svg) {
  static const std::regex kRe(
      "<rect class=\"plot-area\" x=\"([^\"]+)\" y=\"([^\"]+)\" width=\"([^\"]+)\" "
      "height=\"([^\"]+)\"");
  std::smatch m;
  EXPECT_TRUE(std::regex_search(svg, m, kRe)) << svg;
  if (m.empty()) return {};
  const double x = std::stod(m[1]), y = std::stod(m[2]);
  return {x, y, x + std::stod(m[3]), y + std::stod(m[4])};
}

// Points of each `<polyline class="series">`, in document order.
std::vector<std::vector<Pt>> Polylines(const std::string& svg) {
  static const std::regex kRe("<polyline class=\"series\"[^>]* points=\"([^\"]*)\"");
  std::vector<std::vector<Pt>> lines;
  for (std::sregex_iterator it(svg.begin(), svg.end(), kRe), end; it != end; ++it) {
    std::vector<Pt> line;
    std::istringstream in((*it)[1].str());
    std::string pair;
    while (in >> pair) {
      const size_t comma = pair.find(',');
      line.push_back({std::stod(pair.substr(0, comma)), std::stod(pair.substr(comma + 1))});
    }
    lines.push_back(line);
  }
  return lines;
}

std::vector<Pt> Markers(const std::string& svg) {
  static const std::regex kRe("<circle class=\"marker\"[^>]* cx=\"([^\"]+)\" cy=\"([^\"]+)\"");
  std::vector<Pt> markers;
  for (std::sregex_iterator it(svg.begin(), svg.end(), kRe), end; it != end; ++it) {
    markers.push_back({std::stod((*it)[1]), std::stod((*it)[2])});
  }
  return markers;
}

// (pixel position, value parsed from the label) of every tick of class `cls`.
std::vector<std::pair<double, double>> Ticks(const std::string& svg, const std::string& cls) {
  const std::regex re("<text class=\"" + cls +
                      "\" x=\"([^\"]+)\" y=\"([^\"]+)\"[^>]*>([^<]*)</text>");
  std::vector<std::pair<double, double>> ticks;
  for (std::sregex_iterator it(svg.begin(), svg.end(), re), end; it != end; ++it) {
    const std::string label = (*it)[3];
    char* parse_end = nullptr;
    const double value = std::strtod(label.c_str(), &parse_end);
    EXPECT_EQ(*parse_end, '\0') << "label is not a number: " << label;
    ticks.push_back({std::stod((*it)[cls == "x-tick" ? 1 : 2]), value});
  }
  return ticks;
}

std::vector<std::string> Strokes(const std::string& svg) {
  static const std::regex kRe("<polyline class=\"series\"[^>]* stroke=\"([^\"]+)\"");
  std::vector<std::string> strokes;
  for (std::sregex_iterator it(svg.begin(), svg.end(), kRe), end; it != end; ++it) {
    strokes.push_back((*it)[1]);
  }
  return strokes;
}

bool HasNonFiniteNumber(const std::string& svg) {
  return svg.find("nan") != std::string::npos || svg.find("inf") != std::string::npos;
}

TEST(RenderLineChartSvgTest, RendersWellFormedDocumentWithLabelsLegendAndOneLinePerSeries) {
  ChartOptions options;
  options.title = "E2E latency vs concurrency";
  options.x_label = "concurrency";
  options.y_label = "p99 E2E (ms)";
  const std::string svg = RenderLineChartSvg(options, {{"glimpse", {1, 2, 4, 8}, {10, 12, 15, 30}},
                                                       {"vllm", {1, 2, 4, 8}, {9, 11, 16, 40}}});
  EXPECT_TRUE(IsWellFormedSvg(svg));
  EXPECT_NE(svg.find(">E2E latency vs concurrency</text>"), std::string::npos);
  EXPECT_NE(svg.find("class=\"x-label\""), std::string::npos);
  EXPECT_NE(svg.find(">concurrency</text>"), std::string::npos);
  EXPECT_NE(svg.find(">p99 E2E (ms)</text>"), std::string::npos);
  EXPECT_NE(svg.find("<text class=\"legend-entry\" x=\""), std::string::npos);
  EXPECT_NE(svg.find(">glimpse</text>"), std::string::npos);
  EXPECT_NE(svg.find(">vllm</text>"), std::string::npos);
  EXPECT_EQ(Polylines(svg).size(), 2u);
  EXPECT_EQ(Markers(svg).size(), 8u);
  const std::vector<std::string> strokes = Strokes(svg);
  ASSERT_EQ(strokes.size(), 2u);
  EXPECT_NE(strokes[0], strokes[1]);
  EXPECT_EQ(svg.find("no data"), std::string::npos);
}

TEST(RenderLineChartSvgTest, EscapesMarkupInTitleLabelsAndSeriesNames) {
  ChartOptions options;
  options.title = "a<b & \"c\"";
  options.x_label = "x>0";
  options.y_label = "it's";
  const std::string svg = RenderLineChartSvg(options, {{"<script>", {1, 2}, {3, 4}}});
  EXPECT_TRUE(IsWellFormedSvg(svg));
  EXPECT_NE(svg.find(">a&lt;b &amp; &quot;c&quot;</text>"), std::string::npos);
  EXPECT_NE(svg.find(">x&gt;0</text>"), std::string::npos);
  EXPECT_NE(svg.find(">it&apos;s</text>"), std::string::npos);
  EXPECT_NE(svg.find(">&lt;script&gt;</text>"), std::string::npos);
  EXPECT_EQ(svg.find("<script"), std::string::npos);
}

TEST(RenderLineChartSvgTest, ControlCharactersDoNotBreakTheDocument) {
  ChartOptions options;
  options.title = std::string("bell\x07") + "end";
  const std::string svg = RenderLineChartSvg(options, {{"s", {1, 2}, {1, 2}}});
  EXPECT_TRUE(IsWellFormedSvg(svg));
  EXPECT_EQ(svg.find('\x07'), std::string::npos);
  EXPECT_NE(svg.find(">bell end</text>"), std::string::npos);
}

TEST(RenderLineChartSvgTest, PointsLieInsidePlotAreaAndKeepDataOrder) {
  // Unsorted, mixed-sign values: pixel order must follow value order on both axes.
  const std::vector<double> xs = {3.5, -2, 10, 0.25, 7, -8.5};
  const std::vector<double> ys = {100, -40, 5, 60, -3, 20};
  const std::string svg = RenderLineChartSvg({}, {{"s", xs, ys}});
  ASSERT_TRUE(IsWellFormedSvg(svg));
  const Rect area = PlotArea(svg);
  const auto lines = Polylines(svg);
  ASSERT_EQ(lines.size(), 1u);
  const std::vector<Pt>& px = lines[0];
  ASSERT_EQ(px.size(), xs.size());
  for (size_t i = 0; i < px.size(); ++i) {
    EXPECT_TRUE(area.Contains(px[i])) << i;
    for (size_t j = 0; j < px.size(); ++j) {
      EXPECT_EQ((xs[i] < xs[j]), (px[i].x < px[j].x)) << i << " " << j;
      EXPECT_EQ((ys[i] < ys[j]), (px[i].y > px[j].y)) << i << " " << j;  // SVG y grows downwards.
    }
  }
  // Markers sit on the polyline's vertices.
  const std::vector<Pt> markers = Markers(svg);
  ASSERT_EQ(markers.size(), px.size());
  for (size_t i = 0; i < px.size(); ++i) {
    EXPECT_DOUBLE_EQ(markers[i].x, px[i].x);
    EXPECT_DOUBLE_EQ(markers[i].y, px[i].y);
  }
}

TEST(RenderLineChartSvgTest, DataIsPlacedLinearlyAndLinesUpWithTickLabels) {
  const std::string svg = RenderLineChartSvg({}, {{"s", {0, 25, 50, 100}, {0, 1, 2, 4}}});
  const std::vector<Pt> px = Polylines(svg).at(0);
  ASSERT_EQ(px.size(), 4u);
  // Equal data steps are equal pixel steps.
  EXPECT_NEAR(px[1].x - px[0].x, px[2].x - px[1].x, 0.02);
  EXPECT_NEAR(px[3].x - px[2].x, 2 * (px[2].x - px[1].x), 0.02);
  EXPECT_NEAR(px[3].y - px[2].y, 2 * (px[2].y - px[1].y), 0.02);
  // The x tick labelled 100 is at the pixel of x = 100, and the one labelled 0 at x = 0.
  int matched = 0;
  for (const auto& [pixel, value] : Ticks(svg, "x-tick")) {
    if (value == 0) {
      EXPECT_NEAR(pixel, px[0].x, 0.01);
      ++matched;
    }
    if (value == 100) {
      EXPECT_NEAR(pixel, px[3].x, 0.01);
      ++matched;
    }
  }
  EXPECT_EQ(matched, 2);
}

TEST(RenderLineChartSvgTest, LogAxisPlacesDecadesAtEqualSpacing) {
  ChartOptions options;
  options.log_x = true;
  options.log_y = true;
  const std::string svg = RenderLineChartSvg(options, {{"s", {1, 10, 100}, {1000, 100, 10}}});
  ASSERT_TRUE(IsWellFormedSvg(svg));
  const std::vector<Pt> px = Polylines(svg).at(0);
  ASSERT_EQ(px.size(), 3u);
  EXPECT_GT(px[1].x - px[0].x, 10);
  EXPECT_NEAR(px[1].x - px[0].x, px[2].x - px[1].x, 0.02);
  EXPECT_GT(px[1].y - px[0].y, 10);
  EXPECT_NEAR(px[1].y - px[0].y, px[2].y - px[1].y, 0.02);
  // Ticks are decades, and the tick labelled 10 is at the pixel of x = 10.
  const auto x_ticks = Ticks(svg, "x-tick");
  ASSERT_GE(x_ticks.size(), 3u);
  bool found_ten = false;
  for (const auto& [pixel, value] : x_ticks) {
    const double exponent = std::log10(value);
    EXPECT_NEAR(exponent, std::round(exponent), 1e-12) << value;
    if (value == 10) {
      found_ten = true;
      EXPECT_NEAR(pixel, px[1].x, 0.01);
    }
  }
  EXPECT_TRUE(found_ten);
  const Rect area = PlotArea(svg);
  EXPECT_NEAR(x_ticks.front().first, area.x0, 0.01);
  EXPECT_NEAR(x_ticks.back().first, area.x1, 0.01);
  // Two decades take twice the pixels of one.
  const std::vector<Pt> wide =
      Polylines(RenderLineChartSvg(options, {{"s", {1, 10, 1000}, {1, 1, 1}}})).at(0);
  EXPECT_NEAR(wide[2].x - wide[1].x, 2 * (wide[1].x - wide[0].x), 0.02);
}

TEST(RenderLineChartSvgTest, LogAxisDropsNonPositiveValues) {
  ChartOptions options;
  options.log_x = true;
  const std::string svg = RenderLineChartSvg(options, {{"s", {-1, 0, 1, 10}, {5, 6, 7, 8}}});
  ASSERT_TRUE(IsWellFormedSvg(svg));
  EXPECT_EQ(Polylines(svg).at(0).size(), 2u);
  EXPECT_FALSE(HasNonFiniteNumber(svg));
}

TEST(RenderLineChartSvgTest, LinearTicksAreNiceNumbersCoveringTheData) {
  const std::vector<std::pair<double, double>> ranges = {
      {0, 0.93},    {3, 1234},     {-17, 42}, {1e-3, 2.7e-3}, {0.5, 0.5001},
      {2e9, 7.3e9}, {-5e-7, 3e-7}, {99, 101}, {0.003, 0.003}, {-5, -5}};
  for (const auto& [lo, hi] : ranges) {
    SCOPED_TRACE(std::to_string(lo) + " .. " + std::to_string(hi));
    const std::string svg = RenderLineChartSvg({}, {{"s", {lo, hi}, {hi, lo}}});
    ASSERT_TRUE(IsWellFormedSvg(svg));
    const Rect area = PlotArea(svg);
    for (const std::string cls : {"x-tick", "y-tick"}) {
      const auto ticks = Ticks(svg, cls);
      ASSERT_GE(ticks.size(), 3u);
      ASSERT_LE(ticks.size(), 12u);
      EXPECT_LE(ticks.front().second, lo);
      EXPECT_GE(ticks.back().second, hi);
      // The axis runs from the first tick to the last: they sit on the plot area's edges.
      EXPECT_NEAR(ticks.front().first, cls == "x-tick" ? area.x0 : area.y1, 0.01);
      EXPECT_NEAR(ticks.back().first, cls == "x-tick" ? area.x1 : area.y0, 0.01);
      const double step = ticks[1].second - ticks[0].second;
      ASSERT_GT(step, 0);
      // The step is 1, 2 or 5 times a power of ten.
      const double mantissa = step / std::pow(10.0, std::floor(std::log10(step) + 1e-9));
      EXPECT_TRUE(std::fabs(mantissa - 1) < 1e-6 || std::fabs(mantissa - 2) < 1e-6 ||
                  std::fabs(mantissa - 5) < 1e-6)
          << "step " << step;
      for (size_t i = 1; i < ticks.size(); ++i) {
        EXPECT_NEAR(ticks[i].second - ticks[i - 1].second, step, step * 1e-6);
        // Every tick value is a multiple of the step, and ticks are evenly spaced in pixels.
        const double multiple = ticks[i].second / step;
        EXPECT_NEAR(multiple, std::round(multiple), 1e-6);
        const double gap = ticks[i].first - ticks[i - 1].first;
        EXPECT_NEAR(std::fabs(gap), std::fabs(ticks[1].first - ticks[0].first), 0.02);
      }
    }
  }
}

TEST(RenderLineChartSvgTest, StepModeHoldsEachLevelUntilTheNextX) {
  ChartOptions options;
  options.step = true;
  options.markers = false;
  const std::string svg = RenderLineChartSvg(options, {{"cdf", {1, 2, 4}, {0.25, 0.5, 1}}});
  ASSERT_TRUE(IsWellFormedSvg(svg));
  const std::vector<Pt> px = Polylines(svg).at(0);
  ASSERT_EQ(px.size(), 5u);  // n points plus one corner per step.
  for (size_t k = 1; k < px.size(); ++k) {
    if (k % 2 == 1) {
      EXPECT_DOUBLE_EQ(px[k].y, px[k - 1].y);  // Horizontal at the previous level...
      EXPECT_GT(px[k].x, px[k - 1].x);
    } else {
      EXPECT_DOUBLE_EQ(px[k].x, px[k - 1].x);  // ...then straight up to the new one.
      EXPECT_LT(px[k].y, px[k - 1].y);
    }
  }
  EXPECT_TRUE(Markers(svg).empty());
}

TEST(RenderLineChartSvgTest, EmptyInputsSayNoData) {
  ChartOptions options;
  options.title = "nothing";
  for (const std::vector<PlotSeries>& series :
       {std::vector<PlotSeries>{}, std::vector<PlotSeries>{{"a", {}, {}}, {"b", {}, {}}},
        std::vector<PlotSeries>{{"nan", {kNaN, 1}, {1, kInf}}}}) {
    const std::string svg = RenderLineChartSvg(options, series);
    EXPECT_TRUE(IsWellFormedSvg(svg));
    EXPECT_NE(svg.find(">no data</text>"), std::string::npos);
    EXPECT_NE(svg.find(">nothing</text>"), std::string::npos);
    EXPECT_TRUE(Polylines(svg).empty());
  }
  // On a log axis, only non-positive values is no data too.
  options.log_y = true;
  EXPECT_NE(RenderLineChartSvg(options, {{"s", {1, 2}, {0, -1}}}).find("no data"),
            std::string::npos);
}

TEST(RenderLineChartSvgTest, SkipsNonFinitePoints) {
  const std::string svg = RenderLineChartSvg(
      {}, {{"s", {1, 2, kNaN, 4, 5, 6}, {1, kInf, 3, 4, -kInf, 6}}, {"t", {1, 2}, {kNaN, 2}}});
  ASSERT_TRUE(IsWellFormedSvg(svg));
  const auto lines = Polylines(svg);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].size(), 3u);
  EXPECT_EQ(lines[1].size(), 1u);
  EXPECT_FALSE(HasNonFiniteNumber(svg));
}

TEST(RenderLineChartSvgTest, SinglePointsAndConstantSeriesGetAPaddedRange) {
  ChartOptions no_markers;
  no_markers.markers = false;
  const std::vector<std::vector<PlotSeries>> inputs = {{{"one", {5}, {5}}},
                                                       {{"zero", {0}, {0}}},
                                                       {{"flat", {1, 2, 3}, {7, 7, 7}}},
                                                       {{"tiny", {1e-300}, {-4e-320}}}};
  for (const auto& series : inputs) {
    SCOPED_TRACE(series[0].name);
    for (const ChartOptions& options : {ChartOptions{}, no_markers}) {
      const std::string svg = RenderLineChartSvg(options, series);
      ASSERT_TRUE(IsWellFormedSvg(svg));
      EXPECT_FALSE(HasNonFiniteNumber(svg));
      const Rect area = PlotArea(svg);
      EXPECT_GT(area.x1 - area.x0, 100);
      EXPECT_GT(area.y1 - area.y0, 100);
      const std::vector<Pt> line = Polylines(svg).at(0);
      for (const Pt& p : line) {
        EXPECT_TRUE(area.Contains(p));
        // A padded range puts a lone value strictly inside, not on an edge.
        if (series[0].x.size() == 1) {
          EXPECT_GT(p.x, area.x0);
          EXPECT_LT(p.x, area.x1);
          EXPECT_GT(p.y, area.y0);
          EXPECT_LT(p.y, area.y1);
        }
      }
      // A lone point is invisible as a line, so it always gets a marker.
      if (series[0].x.size() == 1) {
        EXPECT_EQ(Markers(svg).size(), 1u);
      }
    }
  }
}

TEST(RenderLineChartSvgTest, ExtremeMagnitudesStayFiniteAndInside) {
  const double big = std::numeric_limits<double>::max();
  const std::string svg = RenderLineChartSvg({}, {{"s", {-big, 0, big}, {big, -big, 1}}});
  ASSERT_TRUE(IsWellFormedSvg(svg));
  EXPECT_FALSE(HasNonFiniteNumber(svg));
  const Rect area = PlotArea(svg);
  const std::vector<Pt> px = Polylines(svg).at(0);
  ASSERT_EQ(px.size(), 3u);
  for (const Pt& p : px) EXPECT_TRUE(area.Contains(p));
  EXPECT_LT(px[0].x, px[1].x);
  EXPECT_LT(px[1].x, px[2].x);

  ChartOptions log;
  log.log_x = log.log_y = true;
  const std::string log_svg =
      RenderLineChartSvg(log, {{"s", {std::numeric_limits<double>::denorm_min(), big}, {1, 2}}});
  ASSERT_TRUE(IsWellFormedSvg(log_svg));
  EXPECT_FALSE(HasNonFiniteNumber(log_svg));
  EXPECT_LE(Ticks(log_svg, "x-tick").size(), 12u);
}

TEST(RenderLineChartSvgTest, SeriesColoursAreDistinctThenCycle) {
  std::vector<PlotSeries> series;
  for (int i = 0; i < 20; ++i) series.push_back({"s" + std::to_string(i), {0, 1}, {1.0 * i, 2}});
  const std::string svg = RenderLineChartSvg({}, series);
  ASSERT_TRUE(IsWellFormedSvg(svg));
  const std::vector<std::string> strokes = Strokes(svg);
  ASSERT_EQ(strokes.size(), 20u);
  EXPECT_EQ(std::set<std::string>(strokes.begin(), strokes.begin() + 8).size(), 8u);
  const size_t palette = std::set<std::string>(strokes.begin(), strokes.end()).size();
  EXPECT_LT(palette, 20u);
  EXPECT_EQ(strokes[palette], strokes[0]);
  for (int i = 0; i < 20; ++i) {
    EXPECT_NE(svg.find(">s" + std::to_string(i) + "</text>"), std::string::npos) << i;
  }
}

TEST(CdfSeriesTest, SortsValuesDropsNaNAndEndsAtOne) {
  const PlotSeries cdf = CdfSeries("ttft", {3, 1, kNaN, 2, 5});
  EXPECT_EQ(cdf.name, "ttft");
  EXPECT_EQ(cdf.x, (std::vector<double>{1, 2, 3, 5}));
  EXPECT_EQ(cdf.y, (std::vector<double>{0.25, 0.5, 0.75, 1.0}));
}

TEST(CdfSeriesTest, SubsamplingKeepsEndpointsAndStaysMonotone) {
  std::vector<double> values;
  for (int i = 999; i >= 0; --i) values.push_back(i);  // Reverse order: sorting is needed.
  const PlotSeries cdf = CdfSeries("e2e", values, 10);
  ASSERT_EQ(cdf.x.size(), 10u);
  ASSERT_EQ(cdf.y.size(), 10u);
  EXPECT_EQ(cdf.x.front(), 0);
  EXPECT_EQ(cdf.x.back(), 999);
  EXPECT_DOUBLE_EQ(cdf.y.front(), 0.001);
  EXPECT_DOUBLE_EQ(cdf.y.back(), 1.0);
  for (size_t k = 0; k < cdf.x.size(); ++k) {
    EXPECT_DOUBLE_EQ(cdf.y[k], (cdf.x[k] + 1) / 1000);  // Each kept point is still exact.
    if (k > 0) {
      EXPECT_GT(cdf.x[k], cdf.x[k - 1]);
      EXPECT_GT(cdf.y[k], cdf.y[k - 1]);
      EXPECT_NEAR(cdf.x[k] - cdf.x[k - 1], 111, 1);  // Evenly spaced ranks.
    }
  }
  // max_points just below n and tiny max_points still keep both ends.
  for (size_t max_points : {size_t{999}, size_t{2}, size_t{1}, size_t{0}}) {
    const PlotSeries sub = CdfSeries("", values, max_points);
    ASSERT_EQ(sub.x.size(), std::max<size_t>(max_points, 2));
    EXPECT_EQ(sub.x.front(), 0);
    EXPECT_EQ(sub.x.back(), 999);
    for (size_t k = 1; k < sub.x.size(); ++k) EXPECT_GT(sub.x[k], sub.x[k - 1]);
  }
}

TEST(CdfSeriesTest, EmptyAndSingleValueInputs) {
  EXPECT_TRUE(CdfSeries("a", {}).x.empty());
  EXPECT_TRUE(CdfSeries("a", {kNaN, kNaN}).y.empty());
  const PlotSeries one = CdfSeries("a", {4.5});
  EXPECT_EQ(one.x, std::vector<double>{4.5});
  EXPECT_EQ(one.y, std::vector<double>{1.0});
  // Renders as a valid document: a CDF of one value is one point.
  ChartOptions options;
  options.step = true;
  EXPECT_TRUE(IsWellFormedSvg(RenderLineChartSvg(options, {one, CdfSeries("b", {})})));
}

TEST(WriteTextFileTest, WritesExactBytesAndReportsFailure) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(tmp ? tmp : "/tmp") + "/svg_plot_test.svg";
  const std::string text = RenderLineChartSvg({}, {{"s", {1, 2}, {3, 4}}});
  ASSERT_TRUE(WriteTextFile(path, "old contents that are longer than nothing"));
  ASSERT_TRUE(WriteTextFile(path, text));  // Replaces, not appends.
  std::ifstream in(path, std::ios::binary);
  std::stringstream read;
  read << in.rdbuf();
  EXPECT_EQ(read.str(), text);
  EXPECT_FALSE(WriteTextFile(std::string(tmp ? tmp : "/tmp") + "/no/such/dir/x.svg", text));
}

}  // namespace
}  // namespace glimpse::tools::loadgen
