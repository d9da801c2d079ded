// toml_reader.cc - typed reads of a TOML file; see toml_reader.h.
#include "base/toml_reader.h"

#include "absl/strings/str_cat.h"
#include "base/strings.h"

namespace volley::base {

absl::Status TomlFile::Error(const toml::node& node, std::string_view key,
                             std::string_view why) const {
  return absl::InvalidArgumentError(absl::StrCat(Sv(name), ":", node.source().begin.line, ": ",
                                                 Sv(key), ": ", Sv(why)));
}

absl::StatusOr<toml::table> ParseToml(std::string_view text, std::string_view file_name) {
  // toml++ reports syntax errors by exception; Volley code does not throw.
  try {
    return toml::parse(text, file_name);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(Sv(file_name), ":", e.source().begin.line,
                                                   ": ", Sv(e.description())));
  }
}

absl::Status GetString(const TomlFile& file, const toml::node& node, std::string_view key,
                       std::string* out, StringLimits limits) {
  const auto* v = node.as_string();
  if (v == nullptr) return file.Error(node, key, "must be a string");
  if (!limits.allow_empty && v->get().empty()) return file.Error(node, key, "must not be empty");
  if (v->get().size() > limits.max_length) {
    return file.Error(node, key, absl::StrCat("longer than ", limits.max_length, " octets"));
  }
  *out = v->get();
  return absl::OkStatus();
}

absl::Status GetStringList(const TomlFile& file, const toml::node& node, std::string_view key,
                           std::vector<std::string>* out) {
  const auto* arr = node.as_array();
  if (arr == nullptr) return file.Error(node, key, "must be an array of strings");
  out->clear();
  for (const auto& e : *arr) {
    std::string s;
    if (absl::Status st = GetString(file, e, key, &s); !st.ok()) return st;
    out->push_back(std::move(s));
  }
  return absl::OkStatus();
}

absl::Status GetBool(const TomlFile& file, const toml::node& node, std::string_view key,
                     bool* out) {
  const auto* v = node.as_boolean();
  if (v == nullptr) return file.Error(node, key, "must be true or false");
  *out = v->get();
  return absl::OkStatus();
}

absl::Status GetInt(const TomlFile& file, const toml::node& node, std::string_view key,
                    int64_t lo, int64_t hi, int64_t* out) {
  const auto* v = node.as_integer();
  if (v == nullptr) return file.Error(node, key, "must be an integer");
  if (v->get() < lo || v->get() > hi) {
    return file.Error(node, key, absl::StrCat("must be ", lo, "..", hi));
  }
  *out = v->get();
  return absl::OkStatus();
}

absl::Status CheckDurationIn(const TomlFile& file, const toml::node& node, std::string_view key,
                             absl::Duration lo, absl::Duration hi, absl::Duration d) {
  if (d < lo || d > hi) {
    return file.Error(node, key, absl::StrCat("must be ", absl::FormatDuration(lo), "..",
                                              absl::FormatDuration(hi)));
  }
  return absl::OkStatus();
}

absl::StatusOr<const toml::array*> TablesOf(const TomlFile& file, const toml::node& node,
                                            std::string_view name, std::string_view what,
                                            size_t max) {
  const auto* arr = node.as_array();
  if (arr == nullptr || (!arr->empty() && !arr->is_array_of_tables())) {
    return file.Error(node, name, absl::StrCat("must be an array of tables: write each ",
                                               Sv(what), " as [[", Sv(name), "]]"));
  }
  if (arr->size() > max) {
    return file.Error(node, name, absl::StrCat(arr->size(), " ", Sv(what), "s; at most ", max));
  }
  return arr;
}

absl::Status ReadTable(const TomlFile& file, const toml::node& node, std::string_view name,
                       const TomlKeys& keys, std::string_view unknown) {
  const auto* table = node.as_table();
  if (table == nullptr) return file.Error(node, name, "must be a table");
  for (const auto& [k, v] : *table) {
    const std::string full = absl::StrCat(Sv(name), ".", Sv(k.str()));
    auto it = keys.find(k.str());
    if (it == keys.end()) return file.Error(v, full, unknown);
    if (absl::Status st = it->second(v, full); !st.ok()) return st;
  }
  return absl::OkStatus();
}

std::vector<std::string> TomlKeyNames(const TomlKeys& keys) {
  std::vector<std::string> names;
  for (const auto& [name, handler] : keys) names.push_back(name);
  return names;
}

}  // namespace volley::base
