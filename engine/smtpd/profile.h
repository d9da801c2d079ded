// NAME
//   profile.h - volley-sink's fault profiles: how a listener or a recipient
//   domain misbehaves, read from a TOML file
//
// SYNOPSIS
//   #include "engine/smtpd/profile.h"
//
//   ASSIGN_OR_RETURN(ProfileSet set, LoadProfiles("faults.toml"));
//   const Profile& p = set.ForListener("127.0.0.2:2525", "127.0.0.2:2525");
//   const Profile* d = set.ForDomain("reject.test");   // nullptr: none named
//
// DESCRIPTION
//   A Profile says what a session offers (EHLO or not, which extensions, SIZE),
//   how it greets, how slowly it answers, and which commands get a canned reply,
//   a delay or a dropped connection, and at what rate. A ProfileSet holds the
//   profiles of one file and which listener and which recipient domain uses
//   which. The file format is in docs/sink.md; the Session (session.h) applies a
//   profile, the server (server.h) only executes its decisions.
//
//   Without a file, ProfileSet() holds one built-in "default" profile that
//   behaves as volley-sink always did: ESMTP with PIPELINING, SIZE, 8BITMIME,
//   ENHANCEDSTATUSCODES, SMTPUTF8 and CHUNKING, no faults.
//
// ERRORS
//   ParseProfiles and LoadProfiles return InvalidArgument as "FILE:LINE: KEY:
//   REASON", e.g. "faults.toml:7: profile.flaky.reply[1].rate: must be 0..1";
//   a key volley-sink does not know is an error, never ignored.
//
// BOUNDS
//   kMaxProfiles profiles, kMaxRules reply rules and kMaxRules disconnect rules
//   per profile, kMaxMappings listener and domain entries, names (profiles,
//   listener addresses, domains) of at most kMaxNameLength octets, replies of at most kMaxReplyLength octets, match
//   strings of at most kMaxMatchLength, injected bytes of at most
//   kMaxInjectLength, delays of at most kMaxDelay, files of at most
//   kMaxFileSize octets. Going past one is a load error.
//
// SEE ALSO
//   docs/sink.md, session.h, server.h, tools/sink/main.cc.
#ifndef VOLLEY_ENGINE_SMTPD_PROFILE_H_
#define VOLLEY_ENGINE_SMTPD_PROFILE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace volley::smtpd {

inline constexpr size_t kMaxProfiles = 64;
inline constexpr size_t kMaxRules = 64;
inline constexpr size_t kMaxMappings = 4096;
inline constexpr size_t kMaxNameLength = 255;
inline constexpr size_t kMaxReplyLength = 4096;
inline constexpr size_t kMaxMatchLength = 256;
inline constexpr size_t kMaxInjectLength = 4096;
inline constexpr absl::Duration kMaxDelay = absl::Hours(1);
inline constexpr size_t kMaxFileSize = 1 << 20;

// What a rule is keyed on. kDot is the end of DATA content (CRLF "." CRLF);
// kConnect (disconnect rules only) is the moment a connection is accepted,
// before the greeting.
enum class Command : uint8_t {
  kOther,  // anything else (unknown commands, bare LF lines); never keyed on
  kConnect,
  kEhlo,
  kHelo,
  kMail,
  kRcpt,
  kData,
  kDot,
  kBdat,
  kRset,
  kNoop,
  kQuit,
  kStartTls,
};

// CommandName - "RCPT", "DOT", ... as written in the file.
std::string_view CommandName(Command c);

// A canned reply, as sent.
struct Reply {
  // The octets sent, CRLF line ends included. Empty: no override.
  std::string bytes;
  // The reply code (200..599), or 0 for a raw reply that does not start with
  // one. 2xx and 3xx let the command take effect; 4xx, 5xx and 0 refuse it;
  // 421 also closes the connection.
  int code = 0;
};

// [[profile.NAME.reply]]: the reply (and/or a delay) for a command.
struct ReplyRule {
  Command command = Command::kOther;
  std::string match;    // lower case; the rule applies only when the command's
                        // argument contains it (any case). "": always.
  uint32_t nth = 0;     // only the nth matching occurrence in a session; 0: every
  double rate = 1.0;    // share of matching occurrences it fires on, 0..1
  Reply reply;          // empty bytes: answer as usual (delay only)
  absl::Duration delay = absl::ZeroDuration();  // before the reply
  uint32_t id = 0;      // index over the whole set, for per-session counters
};

// [[profile.NAME.disconnect]]: close the connection, without a reply, once a
// command (or the end of data, or the connection) has been received.
struct DisconnectRule {
  Command after = Command::kOther;
  std::string match;
  uint32_t nth = 0;
  double rate = 1.0;
  uint32_t id = 0;
};

struct Profile {
  std::string name = "default";

  // EHLO answered with the extensions below (true), or 502 so that the client
  // falls back to HELO (false, "no-esmtp"). Default: true.
  bool esmtp = true;
  // Extensions advertised in the EHLO reply. Defaults: all true but starttls.
  bool pipelining = true;
  bool chunking = true;
  bool starttls = false;
  bool smtputf8 = true;
  bool eight_bit_mime = true;
  // SIZE advertised and enforced (552 5.3.4); 0: SIZE not advertised and no
  // limit. Default: unset, which means SessionOptions::max_message_size.
  std::optional<uint64_t> size_limit;

  // The greeting; empty bytes: "220 HOSTNAME ESMTP volley-sink". 421 closes
  // after sending it; any other 4xx or 5xx refuses service: QUIT gets 221,
  // everything else 503 (RFC 5321 3.1).
  Reply greeting;
  absl::Duration greeting_delay = absl::ZeroDuration();
  // Delay before every reply but the greeting. Default: 0.
  absl::Duration tarpit = absl::ZeroDuration();
  // First RCPT of a (sender, recipient) pair gets 451 4.7.1 until this long has
  // passed since; 0: no greylisting. Default: 0.
  absl::Duration greylist = absl::ZeroDuration();
  // New connections past this many open ones on the same listener get
  // "421 4.7.0" and are closed; 0: no limit. Default: 0.
  uint32_t max_connections = 0;
  // Octets sent in the same write right after "220 2.0.0 Ready to start TLS".
  std::string inject_after_starttls;

  std::vector<ReplyRule> replies;          // in file order; the first that fires wins
  std::vector<DisconnectRule> disconnects; // in file order
};

class ProfileSet {
 public:
  // One built-in "default" profile and no mappings.
  ProfileSet();

  // The profile for a listener: the [listener."ADDR"] entry whose ADDR is the
  // --listen text as given or the bound address, else "default".
  const Profile& ForListener(std::string_view given, std::string_view bound) const;
  // The [domain."NAME"] profile for a recipient domain (any case), or nullptr.
  const Profile* ForDomain(std::string_view domain) const;

  const Profile& default_profile() const { return profiles_[0]; }
  const std::vector<Profile>& profiles() const { return profiles_; }
  // Listener keys as written, for checking that each names a --listen address.
  std::vector<std::string> listener_keys() const;
  bool has_domains() const { return !domains_.empty(); }
  // Number of rules over every profile (ReplyRule::id and DisconnectRule::id are
  // below it).
  uint32_t rule_count() const { return rule_count_; }
  // Whether some profile offers STARTTLS.
  bool uses_starttls() const;

 private:
  friend absl::StatusOr<ProfileSet> ParseProfiles(std::string_view text,
                                                  std::string_view file_name);

  std::vector<Profile> profiles_;  // [0] is "default"
  absl::flat_hash_map<std::string, uint32_t> listeners_;
  absl::flat_hash_map<std::string, uint32_t> domains_;  // lower-case keys
  uint32_t rule_count_ = 0;
};

// ParseProfiles - a profiles file's text; file_name is for error messages.
absl::StatusOr<ProfileSet> ParseProfiles(std::string_view text, std::string_view file_name);

// LoadProfiles - read and parse a profiles file.
absl::StatusOr<ProfileSet> LoadProfiles(const std::string& path);

// ParseDelay - "250ms", "2s", "1m", "1h" or "0" into a duration.
absl::StatusOr<absl::Duration> ParseDelay(std::string_view text);

// NormalizeReply - check that text is one SMTP reply ("450 4.2.1 busy", lines
// joined by LF or CRLF, every line with the same code, "-" after the code on all
// but the last) and return it with CRLF line ends. why says what is wrong.
std::optional<Reply> NormalizeReply(std::string_view text, std::string* why);

}  // namespace volley::smtpd

#endif  // VOLLEY_ENGINE_SMTPD_PROFILE_H_
