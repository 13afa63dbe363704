// attnkit/plot.h: the charts of the evaluations, drawn by matplotlib.
//
// One plotting path for the project: these functions hand a JSON description of the chart to
// python/attnkit/plot.py (embedded in the library at build time) running in a Python with
// matplotlib, and Python users call the same module directly (attnkit.plot). matplotlib rather
// than a raw-image library because the charts need text: axis labels, tick labels, a legend or a
// colorbar, in any of the formats the path's suffix names (.png, .svg, .pdf).
//
// The interpreter is $ATTNKIT_PYTHON if set, else the first .venv/bin/python found in
// $VIRTUAL_ENV or above the folder of libattnkit.so or the working directory (the project's
// venv, which scripts/setup.sh fills from requirements.txt), else python3 on PATH.
//
// Every chart is written to a temporary file in the destination folder and renamed into place
// when complete: a reader never sees a partial file, and a failed call leaves an existing file
// as it was. Errors name the argument and its value; a missing matplotlib says how to install it.
#pragma once

#include <limits>
#include <string>
#include <vector>

#include "attnkit/status.h"

namespace attnkit::plot {

// A grid of values coloured from vmin (red) to vmax (green), rows top to bottom, columns left
// to right, each cell annotated with its value; NaN cells are grey ("not run"). Used for the
// NIAH depth x length map and layer x head maps.
struct Heatmap {
  std::vector<std::vector<double>> values;           // [rows][cols], rectangular
  std::vector<std::string> row_labels, col_labels;   // empty, or one per row / column
  std::string title, x_label, y_label, colorbar_label;
  double vmin = 0.0, vmax = 1.0;
};
Status heatmap(const Heatmap& chart, const std::string& path);

// One line per series with markers and a legend (accuracy against budget, per-token curves).
// A NaN y is a gap in its line. A dashed series is a reference (a ceiling, a baseline): black,
// dashed, without markers.
struct Series {
  std::string label;
  std::vector<double> x, y;
  bool dashed = false;
};
struct LineChart {
  std::vector<Series> series;
  std::string title, x_label, y_label;
  bool log2_x = false;  // budgets and lengths are usually powers of two
  double y_min = std::numeric_limits<double>::quiet_NaN(), y_max = std::numeric_limits<double>::quiet_NaN();
};
Status lines(const LineChart& chart, const std::string& path);

// The interpreter the charts run in (see above); fails when none is found.
Status plot_python(std::string* out);

}  // namespace attnkit::plot
