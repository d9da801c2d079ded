// toml_reader.h - typed, range-checked reads of a TOML file, errors with file, line and key
//
// SYNOPSIS
//   ASSIGN_OR_RETURN(toml::table root, ParseToml(text, "volley.toml"));
//   const TomlFile file{"volley.toml"};
//   RETURN_IF_ERROR(ReadTable(file, *root.get("delivery"), "delivery", {
//       {"window", [&](auto& n, auto k) { return GetIntInto(file, n, k, 1, 10000000, &window); }},
//   }));
//
// DESCRIPTION
//   volleyd's config (engine/config.cc) and volley-sink's fault profiles
//   (engine/smtpd/profile.cc) read TOML the same strict way: every value has a
//   type and a range, and a key nobody reads is an error, since a typo must
//   never silently leave a default in place. This is that one way. It knows
//   nothing of mail; callers add their own checks and report them through
//   TomlFile::Error so that every message has the same shape:
//
//     FILE:LINE: KEY: REASON      "volley.toml:7: smtp.port: must be 1..65535"
//
//   KEY is the dotted path the caller passes ("smtp.port", "backoff[2].class");
//   ReadTable builds "NAME.KEY" for the keys of a table.
//
//   Unlike the rest of base/, this header exposes a third-party type
//   (toml::node): it is the volley_toml_reader target, linked only by the two
//   readers of TOML, and it exists to wrap toml++'s nodes.
//
// ERRORS
//   InvalidArgument, as above; "unknown key" for a key a ReadTable map lacks;
//   ParseToml reports toml++'s own syntax errors as "FILE:LINE: DESCRIPTION".
//
// BOUNDS
//   GetString takes a length limit; TablesOf a count limit. The file size is the
//   caller's (the sink caps its profiles file before parsing).
#ifndef VOLLEY_BASE_TOML_READER_H_
#define VOLLEY_BASE_TOML_READER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "toml++/toml.h"

namespace volley::base {

// TomlFile - the file the nodes come from, for error messages.
struct TomlFile {
  std::string_view name;
  // Error - InvalidArgument "NAME:LINE: KEY: WHY", LINE the node's.
  absl::Status Error(const toml::node& node, std::string_view key, std::string_view why) const;
};

// ParseToml - the whole text as a table; a syntax error names file and line.
absl::StatusOr<toml::table> ParseToml(std::string_view text, std::string_view file_name);

// What a string may be: at most max_length octets, and empty only when allowed.
struct StringLimits {
  size_t max_length = std::numeric_limits<size_t>::max();
  bool allow_empty = false;
};

absl::Status GetString(const TomlFile& file, const toml::node& node, std::string_view key,
                       std::string* out, StringLimits limits = {});
// GetStringList - an array of non-empty strings.
absl::Status GetStringList(const TomlFile& file, const toml::node& node, std::string_view key,
                           std::vector<std::string>* out);
absl::Status GetBool(const TomlFile& file, const toml::node& node, std::string_view key,
                     bool* out);
// GetInt - an integer within [lo, hi] ("must be LO..HI").
absl::Status GetInt(const TomlFile& file, const toml::node& node, std::string_view key,
                    int64_t lo, int64_t hi, int64_t* out);

// GetIntInto - GetInt into a narrower integer; [lo, hi] must fit T.
template <typename T>
absl::Status GetIntInto(const TomlFile& file, const toml::node& node, std::string_view key,
                        int64_t lo, int64_t hi, T* out) {
  int64_t v = 0;
  absl::Status st = GetInt(file, node, key, lo, hi, &v);
  if (st.ok()) *out = static_cast<T>(v);
  return st;
}

// GetParsed - a string that `parse` turns into a T ("30s", "256MiB", "10/min");
// not a string: "must be `what`"; refused by parse: parse's own message.
template <typename T>
absl::Status GetParsed(const TomlFile& file, const toml::node& node, std::string_view key,
                       absl::StatusOr<T> (*parse)(std::string_view), std::string_view what,
                       T* out) {
  const auto* v = node.as_string();
  if (v == nullptr) return file.Error(node, key, std::string("must be ").append(what));
  absl::StatusOr<T> parsed = parse(v->get());
  if (!parsed.ok()) {
    return file.Error(node, key, std::string_view(parsed.status().message().data(),
                                                  parsed.status().message().size()));
  }
  *out = *std::move(parsed);
  return absl::OkStatus();
}

// CheckDurationIn - after a duration is read: "must be LO..HI" unless within.
absl::Status CheckDurationIn(const TomlFile& file, const toml::node& node, std::string_view key,
                             absl::Duration lo, absl::Duration hi, absl::Duration d);

// TablesOf - `node` ([[name]] in the file) as an array of at most `max` tables;
// `what` names one in the error ("rule", "source").
absl::StatusOr<const toml::array*> TablesOf(const TomlFile& file, const toml::node& node,
                                            std::string_view name, std::string_view what,
                                            size_t max);

// A handler reads one key's value; `key` is the full dotted name for errors.
using TomlKeyHandler = std::function<absl::Status(const toml::node& value, std::string_view key)>;
using TomlKeys = std::map<std::string, TomlKeyHandler, std::less<>>;

// ReadTable - `node` must be a table; each key goes to its handler, in file
// order; a key `keys` lacks is "NAME.KEY: `unknown`" (say which keys there are
// where a list helps: "unknown key (a rule has class, action and period)").
absl::Status ReadTable(const TomlFile& file, const toml::node& node, std::string_view name,
                       const TomlKeys& keys, std::string_view unknown = "unknown key");

// TomlKeyNames - the names of `keys`, sorted (the config-keys documentation test).
std::vector<std::string> TomlKeyNames(const TomlKeys& keys);

}  // namespace volley::base

#endif  // VOLLEY_BASE_TOML_READER_H_
