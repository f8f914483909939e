// The shared skeleton of the report (formatting, Markdown tables, gnuplot figures) and the
// parts each experiment's file (e1.cpp … e5.cpp) contributes to it: its CSV, its figure
// and its report section. Private to the experiments library.
#pragma once

#include "minsharp/experiments/report.hpp"
#include "minsharp/io/files.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace minsharp::experiments::report_parts {

namespace fs = std::filesystem;

inline const double nan_value = std::numeric_limits<double>::quiet_NaN();

// ---- formatting -------------------------------------------------------------------------

inline std::string fmt(const char* format, double v) {
    if (!std::isfinite(v)) return "n/a";
    char buf[64];
    std::snprintf(buf, sizeof buf, format, v);
    return buf;
}

inline std::string sig(double v) { return fmt("%.3g", v); }
inline std::string fixed2(double v) { return fmt("%.2f", v); }
inline std::string fixed3(double v) { return fmt("%.3f", v); }
inline std::string sci(double v) { return fmt("%.1e", v); }

inline std::string table_row(const std::vector<std::string>& cells) {
    std::string s = "|";
    for (const auto& c : cells) s += " " + c + " |";
    return s + "\n";
}

inline std::string table_header(const std::vector<std::string>& cells) {
    std::string s = table_row(cells) + "|";
    for (std::size_t i = 0; i < cells.size(); ++i) s += "---|";
    return s + "\n";
}

inline double mean(const std::vector<double>& v) {
    if (v.empty()) return nan_value;
    double s = 0;
    for (double x : v) s += x;
    return s / double(v.size());
}

template <class R, class F>
double mean_of(const std::vector<const R*>& rows, F field) {
    std::vector<double> v;
    for (const auto* r : rows) v.push_back(field(*r));
    return mean(v);
}

template <class R>
std::string results_csv(const std::vector<R>& rows) {
    CsvWriter csv(R::csv_columns());
    for (const auto& r : rows) csv.add_row(r.csv_row());
    return csv.str();
}

/// null for NaN/inf, which JSON cannot hold.
nlohmann::json finite_or_null(double v);

// ---- figures --------------------------------------------------------------------------------

struct Figures {
    fs::path dir;  ///< DIR/figures
    fs::path gnuplot;
    std::vector<fs::path> drawn;
    std::vector<std::string> failures;

    /// Writes the data files and the script, runs gnuplot into a temp file, renames it.
    void draw(const std::string& name, const std::vector<std::pair<std::string, std::string>>& data,
              const std::string& script_body, const std::string& size = "900,600");
};

inline std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

/// A Markdown image line for figures/<name>.png when it was drawn, else nothing.
std::string figure_link(const std::vector<fs::path>& drawn, const std::string& name,
                        const std::string& alt);

// ---- each experiment's part (eN.cpp) -------------------------------------------------------

void e1_figure(Figures& f, const std::vector<E1Result>& rows);
std::string e1_section(const std::vector<E1Result>& rows, const std::vector<fs::path>& drawn);

std::string e2_csv(const std::vector<E2Result>& rows);
void e2_figure(Figures& f, const std::vector<E2Result>& rows);
std::string e2_section(const std::vector<E2Result>& rows, const std::vector<fs::path>& drawn);

std::string correlations_csv(const std::vector<Correlation>& rows);
nlohmann::json correlations_json(const std::vector<Correlation>& rows);
nlohmann::json seed_spread_json(const std::vector<SeedSpread>& spread);
std::string seed_spread_csv(const std::vector<SeedSpread>& spread);
/// model → trials per base seed, from the plan's E3 grids (empty without a plan).
std::map<std::string, int> trials_per_seed(const nlohmann::json& plan);
void e3_figures(Figures& f, const std::vector<E3Result>& rows);
std::string e3_section(const std::vector<E3Result>& rows, const std::vector<Correlation>& corr,
                       const std::vector<SeedSpread>& spread,
                       const std::vector<fs::path>& drawn);
/// The E3 numbers next to the paper's reference values, with what differs and why.
std::string paper_section(const std::vector<E3Result>& rows, const std::vector<Correlation>& corr,
                          const std::vector<SeedSpread>& spread, const nlohmann::json& plan);

std::string e4_csv(const E4Result& r);
void e4_figure(Figures& f, const E4Result& r);
std::string e4_section(const std::optional<E4Result>& r, const std::vector<fs::path>& drawn);

std::string e5_csv(const std::vector<E5Result>& runs);
void e5_figure(Figures& f, const std::vector<E5Result>& runs);
/// What the runs show of λ_max against 2/η, in sentences made of their numbers.
std::string e5_section(const std::vector<E5Result>& runs, const std::vector<fs::path>& drawn);

}  // namespace minsharp::experiments::report_parts
