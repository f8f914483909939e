// A result struct's fields listed once, in a table that writes its JSON, reads it back and
// makes its CSV header and rows: adding a column is one line, and JSON, CSV and reader cannot
// drift apart. Private to the experiments library.
#pragma once

#include "minsharp/io/files.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace minsharp::experiments::fields {

/// Where a field appears.
enum class In { json_and_csv, json, csv };

/// One field of R: its name (the CSV column, and the JSON key unless json_key says otherwise),
/// how to write it as JSON and as a CSV cell, and how to read it back (nullptr for a value
/// derived from the others, which is written for the reader of the file but not read).
template <class R>
struct Field {
    std::string_view name;
    In in;
    nlohmann::json (*to_json)(const R&);
    std::string (*to_cell)(const R&);
    void (*from_json)(R&, const nlohmann::json&);
    std::string_view json_group = {};  ///< the field sits in this JSON sub-object
    std::string_view json_key = {};    ///< its key there, when not `name`

    std::string_view key() const { return json_key.empty() ? name : json_key; }
    bool in_json() const { return in != In::csv; }
    bool in_csv() const { return in != In::json; }
};

/// A CSV cell in the format the CSV files have always used.
inline std::string cell(const std::string& v) { return v; }
inline std::string cell(double v) { return format_double(v); }
inline std::string cell(int v) { return std::to_string(v); }
inline std::string cell(std::size_t v) { return std::to_string(v); }
inline std::string cell(const std::vector<std::string>& v) {
    std::string joined;
    for (const auto& s : v) joined += (joined.empty() ? "" : "; ") + s;
    return joined;
}

template <class T>
struct member_of;
template <class R, class T>
struct member_of<T R::*> {
    using owner = R;
};
template <auto M>
using owner_of = typename member_of<decltype(M)>::owner;

/// A data member, written and read back.
template <auto M>
Field<owner_of<M>> stored(std::string_view name, In in = In::json_and_csv,
                          std::string_view json_group = {}, std::string_view json_key = {}) {
    using R = owner_of<M>;
    return {name,
            in,
            [](const R& r) { return nlohmann::json(r.*M); },
            [](const R& r) { return cell(r.*M); },
            [](R& r, const nlohmann::json& j) {
                r.*M = j.get<std::remove_reference_t<decltype(r.*M)>>();
            },
            json_group,
            json_key};
}

/// A double member where NaN means "not measured": JSON null and an empty CSV cell, read
/// back as NaN.
template <auto M>
Field<owner_of<M>> optional_number(std::string_view name, In in = In::json_and_csv) {
    using R = owner_of<M>;
    return {name, in,
            [](const R& r) { return std::isnan(r.*M) ? nlohmann::json(nullptr) : nlohmann::json(r.*M); },
            [](const R& r) { return std::isnan(r.*M) ? std::string() : cell(r.*M); },
            [](R& r, const nlohmann::json& j) {
                r.*M = j.is_null() ? std::numeric_limits<double>::quiet_NaN() : j.get<double>();
            }};
}

/// A value computed by a const member function: written, not read.
template <auto F>
Field<owner_of<F>> derived(std::string_view name, In in = In::json_and_csv) {
    using R = owner_of<F>;
    return {name, in, [](const R& r) { return nlohmann::json((r.*F)()); },
            [](const R& r) { return cell((r.*F)()); }, nullptr};
}

/// The fields of R in CSV column order (std::type_identity: R is deduced from the result).
template <class R>
using Table = std::type_identity_t<std::span<const Field<R>>>;

template <class R>
void write_json(const R& r, Table<R> table, nlohmann::json& j) {
    for (const auto& f : table) {
        if (!f.in_json()) continue;
        nlohmann::json& into = f.json_group.empty() ? j : j[std::string(f.json_group)];
        into[std::string(f.key())] = f.to_json(r);
    }
}

template <class R>
nlohmann::json to_json(const R& r, Table<R> table) {
    nlohmann::json j = nlohmann::json::object();
    write_json(r, table, j);
    return j;
}

/// Reads every stored field; throws nlohmann::json's error naming a missing key.
template <class R>
void read_json(R& r, Table<R> table, const nlohmann::json& j) {
    for (const auto& f : table) {
        if (!f.in_json() || !f.from_json) continue;
        const nlohmann::json& from = f.json_group.empty() ? j : j.at(std::string(f.json_group));
        f.from_json(r, from.at(std::string(f.key())));
    }
}

template <class R, std::size_t N>
std::vector<std::string> csv_columns(const Field<R> (&table)[N]) {
    std::vector<std::string> columns;
    for (const auto& f : table)
        if (f.in_csv()) columns.emplace_back(f.name);
    return columns;
}

template <class R>
std::vector<std::string> csv_row(const R& r, Table<R> table) {
    std::vector<std::string> row;
    for (const auto& f : table)
        if (f.in_csv()) row.push_back(f.to_cell(r));
    return row;
}

}  // namespace minsharp::experiments::fields
