#include "tools/sy-bench/link_timeline.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <stdexcept>

namespace switchyard::bench {

namespace {

constexpr const char* kNodeColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                       "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};
constexpr int kWidth = 1000, kLeft = 70, kRight = 150, kPanelHeight = 170, kPanelGap = 60,
              kTop = 60;

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '<') {
      out += "&lt;";
    } else if (c == '>') {
      out += "&gt;";
    } else if (c == '&') {
      out += "&amp;";
    } else {
      out += c;
    }
  }
  return out;
}

// A round step for about `ticks` ticks over [0, span].
double tick_step(double span, int ticks) {
  const double raw = span / std::max(ticks, 1);
  const double magnitude = std::pow(10.0, std::floor(std::log10(std::max(raw, 1e-9))));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * magnitude >= raw) return m * magnitude;
  }
  return 10 * magnitude;
}

}  // namespace

void write_link_timeline_svg(const std::string& path, const std::vector<LinkPanel>& panels,
                             double link_gbit, const std::string& caption) {
  const int height = kTop + static_cast<int>(panels.size()) * (kPanelHeight + kPanelGap) + 20;
  const int plot_w = kWidth - kLeft - kRight;
  const double y_max = link_gbit * 1.15;
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"{}\" height=\"{}\" "
      "fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" "
      "font-size=\"15\">{}</text>\n"
      "<text x=\"{}\" y=\"42\" text-anchor=\"middle\" fill=\"#555\">{}</text>\n",
      kWidth, height, kWidth, height, kWidth / 2, "inter-node links over one iteration", kWidth / 2,
      escape(caption));
  for (size_t p = 0; p < panels.size(); ++p) {
    const LinkPanel& panel = panels[p];
    const int top = kTop + static_cast<int>(p) * (kPanelHeight + kPanelGap) + 20;
    const double span = std::max(panel.total_ms, 1e-6);
    auto x_of = [&](double ms) { return kLeft + plot_w * std::clamp(ms / span, 0.0, 1.0); };
    auto y_of = [&](double gbit) {
      return top + kPanelHeight * (1 - std::clamp(gbit / y_max, 0.0, 1.0));
    };
    svg += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"13\">{}</text>\n", kLeft, top - 6,
                       escape(panel.title));
    // The two calls as shaded bands.
    svg += fmt::format(
        "<rect x=\"{:.1f}\" y=\"{}\" width=\"{:.1f}\" height=\"{}\" fill=\"#fff3e0\"/>\n"
        "<rect x=\"{:.1f}\" y=\"{}\" width=\"{:.1f}\" height=\"{}\" fill=\"#e8f5e9\"/>\n",
        x_of(0), top, x_of(panel.dispatch_ms) - x_of(0), kPanelHeight, x_of(panel.dispatch_ms), top,
        x_of(span) - x_of(panel.dispatch_ms), kPanelHeight);
    svg += fmt::format(
        "<text x=\"{:.1f}\" y=\"{}\" fill=\"#a0522d\">dispatch</text>\n<text x=\"{:.1f}\" "
        "y=\"{}\" fill=\"#2e7d32\">combine</text>\n",
        x_of(0) + 4, top + kPanelHeight + 32, x_of(panel.dispatch_ms) + 4, top + kPanelHeight + 32);
    // Axes, ticks and the link rate.
    svg += fmt::format(
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\n",
        kLeft, top, plot_w, kPanelHeight);
    const double x_step = tick_step(span, 10);
    for (double t = 0; t <= span + 1e-9; t += x_step) {
      svg += fmt::format(
          "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#999\"/>"
          "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4:g}</text>\n",
          x_of(t), top + kPanelHeight, top + kPanelHeight + 5, top + kPanelHeight + 18, t);
    }
    svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">ms</text>\n", kLeft + plot_w,
                       top + kPanelHeight + 32);
    const double y_step = tick_step(y_max, 4);
    for (double g = 0; g <= y_max + 1e-9; g += y_step) {
      svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:g}</text>\n", kLeft - 6,
                         y_of(g) + 4, g);
    }
    svg += fmt::format(
        "<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#444\" "
        "stroke-dasharray=\"2,3\"/><text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\" "
        "fill=\"#444\">link rate {5:g} Gbit/s</text>\n",
        kLeft, y_of(link_gbit), kLeft + plot_w, kLeft + plot_w - 4, y_of(link_gbit) - 3, link_gbit);
    svg += fmt::format(
        "<text transform=\"translate({},{}) rotate(-90)\" text-anchor=\"middle\">Gbit/s</text>\n",
        kLeft - 45, top + kPanelHeight / 2);
    // One line per node and direction: tx solid, rx dashed.
    int legend = 0;
    for (const LinkSeries& s : panel.series) {
      const char* color = kNodeColors[static_cast<size_t>(s.node) % std::size(kNodeColors)];
      std::string points;
      for (size_t b = 0; b < s.gbit.size(); ++b) {
        const double t0 = b * panel.bin_ms, t1 = std::min((b + 1) * panel.bin_ms, span);
        points += fmt::format("{:.1f},{:.1f} {:.1f},{:.1f} ", x_of(t0), y_of(s.gbit[b]), x_of(t1),
                              y_of(s.gbit[b]));
      }
      const double peak = s.gbit.empty() ? 0.0 : *std::max_element(s.gbit.begin(), s.gbit.end());
      svg += fmt::format(
          "<polyline data-peak-gbit=\"{:.4f}\" points=\"{}\" fill=\"none\" stroke=\"{}\" "
          "stroke-width=\"1.3\"{}/>\n",
          peak, points, color, s.received ? " stroke-dasharray=\"4,2\"" : "");
      const int ly = top + 12 + 16 * legend++;
      svg += fmt::format(
          "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"{3}\" stroke-width=\"2\"{4}/>"
          "<text x=\"{5}\" y=\"{6}\">node {7} {8}</text>\n",
          kLeft + plot_w + 6, ly, kLeft + plot_w + 30, color,
          s.received ? " stroke-dasharray=\"4,2\"" : "", kLeft + plot_w + 34, ly + 4, s.node,
          s.received ? "received" : "sent");
    }
  }
  svg += "</svg>\n";
  std::ofstream out(path);
  out << svg;
  if (!out) throw std::runtime_error(fmt::format("--link-svg: cannot write '{}'", path));
}

}  // namespace switchyard::bench
