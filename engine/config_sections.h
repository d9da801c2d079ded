// NAME
//   config_sections.h - private to engine/config: the keys of each config section
//
// SYNOPSIS
//   #include "engine/config_sections.h"     // engine/config.cc only
//
//   RETURN_IF_ERROR(base::ReadTable(file, node, "smtp", config_sections::SmtpKeys(file, &c)));
//   RETURN_IF_ERROR(config_sections::ReadSources(file, node, &c.sources));
//
// DESCRIPTION
//   One *Keys function per section of the TOML file (docs/config.md): the table of
//   its keys, each with the getter that checks its type and range and writes it
//   into the Config (base/toml_reader.h). Array-of-tables sections ([[source]],
//   [[backoff]], [[classify]], [[dkim]], [[token_key]]) have a Read* function that
//   reads every table with its *Keys. engine/config.cc holds the order the
//   sections are read in (Apply), the checks across sections, and the public
//   functions of config.h; AcceptedConfigKeys lists the keys from these same
//   functions, so the keys read and the keys the documentation test checks
//   (tests/unit/engine/config_keys_test.cc) are one list.
//
//   A new key of an existing section goes in its *Keys function here, in
//   docs/config.md, and in its struct in config.h.
//
// CONTRACT
//   The returned TomlKeys hold pointers into `c` (or the struct given) and
//   `file`: use them while both live. Not thread-safe beyond what a Config is.
//
// DIAGNOSTICS
//   Errors are the getters': InvalidArgument "FILE:LINE: SECTION.KEY: reason".
#ifndef VOLLEY_ENGINE_CONFIG_SECTIONS_H_
#define VOLLEY_ENGINE_CONFIG_SECTIONS_H_

#include <vector>

#include "absl/status/status.h"
#include "base/toml_reader.h"
#include "engine/config.h"
#include "metrics/classify.h"

namespace volley::engine::config_sections {

using base::TomlFile;
using base::TomlKeys;

// The plain sections: one table of keys each.
TomlKeys PathsKeys(const TomlFile& file, Config* c);
TomlKeys SmtpKeys(const TomlFile& file, Config* c);
TomlKeys DnsKeys(const TomlFile& file, Config* c);
TomlKeys RetryKeys(const TomlFile& file, Config* c);
TomlKeys DeliveryKeys(const TomlFile& file, Config* c);
TomlKeys QueueKeys(const TomlFile& file, Config* c);
TomlKeys IntakeKeys(const TomlFile& file, Config* c);
TomlKeys AdminKeys(const TomlFile& file, Config* c);
TomlKeys LogKeys(const TomlFile& file, Config* c);
TomlKeys VerpKeys(const TomlFile& file, Config* c);
TomlKeys UnsubscribeKeys(const TomlFile& file, Config* c);
TomlKeys MetricsKeys(const TomlFile& file, Config* c);
TomlKeys InboundKeys(const TomlFile& file, Config* c);
TomlKeys SuppressionKeys(const TomlFile& file, Config* c);
// [cluster] (cluster/options.h); CheckCluster - what holds across its keys,
// after the table is read.
TomlKeys ClusterKeys(const TomlFile& file, Config* c);
absl::Status CheckCluster(const TomlFile& file, const toml::node& node, const Config& c);

// The keys a destination may set: [smtp]'s (PolicyKeys) and a [destination."NAME"]
// table's (those and its retry_* keys). `sources` names the [[source]] tables.
TomlKeys PolicyKeys(const TomlFile& file, DestinationPolicy* p,
                    const std::vector<EgressSource>& sources);
TomlKeys DestinationKeys(const TomlFile& file, DestinationPolicy* p,
                         const std::vector<EgressSource>& sources);

// Arrays of tables: the keys of one table, and the reader of them all.
TomlKeys BackoffRuleKeys(const TomlFile& file, BackoffRule* r);
absl::Status ReadBackoffRules(const TomlFile& file, const toml::node& node,
                              std::vector<BackoffRule>* out);
TomlKeys SourceKeys(const TomlFile& file, EgressSource* e);
absl::Status ReadSources(const TomlFile& file, const toml::node& node,
                         std::vector<EgressSource>* out);
TomlKeys ClassifyRuleKeys(const TomlFile& file, metrics::ClassifyRule* r);
absl::Status ReadClassifyRules(const TomlFile& file, const toml::node& node,
                               std::vector<metrics::ClassifyRule>* out);
TomlKeys DkimKeyKeys(const TomlFile& file, DkimKeyConfig* k);
absl::Status ReadDkimKeys(const TomlFile& file, const toml::node& node,
                          std::vector<DkimKeyConfig>* out);
TomlKeys TokenKeyKeys(const TomlFile& file, TokenKeyConfig* k);
absl::Status ReadTokenKeys(const TomlFile& file, const toml::node& node,
                           std::vector<TokenKeyConfig>* out);

}  // namespace volley::engine::config_sections

#endif  // VOLLEY_ENGINE_CONFIG_SECTIONS_H_
