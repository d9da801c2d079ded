// compose.h - the message a recipient is sent: added fields, signed VERP, DKIM
//
// SYNOPSIS
//   #include "engine/compose.h"
//
//   ASSIGN_OR_RETURN(Credentials creds, Credentials::Load(config, &warnings));
//   spool.SetJobCheck([&creds](auto& h, auto& t) { return creds.CheckJob(h, t); });
//
//   Composer composer(creds);                          // one per shard
//   std::unique_ptr<JobPlan> plan = composer.Plan(header, tpl, job_no);
//   env.rcpts = {...};
//   composer.Compose(*plan, header, tpl, rcpt, line, now, caps, &env);
//   composer.Compose(*plan, header, tpl, rcpt, line, now, client.caps(), &env,
//                    client.content_form());   // already as the session sends it
//
//   // SIGHUP (engine/reload.h): new [[dkim]] keys, the running token keys
//   Credentials next = Credentials::ForReload(*Credentials::Load(new_config, &w), creds);
//   composer.SetCredentials(next);                     // on the shard's thread
//
// DESCRIPTION
//   What turns a rendered template into mail a mailbox provider accepts from a bulk
//   sender (docs/dkim.md):
//   - Message-ID <job.line.random@domain> and Date (RFC 5322 3.6), unless the
//     message has its own or the job turns them off;
//   - List-Unsubscribe and List-Unsubscribe-Post (RFC 8058), List-Id, Feedback-ID,
//     from the job header (queue/job.h RenderMessage);
//   - Volley-Trace: a signed token naming the job and the recipient, when the
//     message is one recipient's (VERP or {{unsubscribe_token}}) and a [[token_key]]
//     exists, so that a complaint that comes back with the recipient's address
//     removed still names them (docs/feedback.md);
//   - the envelope sender: the job's return_path, else b-<token>@[verp] domain, else
//     the job's from;
//   - the 7-bit downgrade for a server without 8BITMIME, done here rather than by the
//     SMTP client because a signature must cover the bytes sent: a downgrade after
//     signing breaks the body hash;
//   - one DKIM-Signature per [[dkim]] key of the From domain (the longest configured
//     domain that is the From domain or a parent of it), prepended last.
//
//   Credentials holds the keys, read at start; a key that cannot be read or is
//   too weak stops volleyd with the file and the reason. A reload reads the
//   [[dkim]] keys again (a key that cannot be read refuses the reload) and keeps
//   the token keys volleyd started with (ForReload). Composer is one shard's: its
//   own dkim::Signer objects (parsed from the PEM again, so shards share no OpenSSL
//   state) and a Date string cached per second.
//
//   SetCredentials swaps a Composer's signers. A JobPlan names signers by index
//   into one set, so each plan remembers the set it was made with
//   (keys_generation); Compose finds the signers again for a plan made with an
//   older set before it signs. A message composed before the swap keeps the
//   signature it was given: the signature is part of its bytes.
//
//   The body hash is computed once per job and per signer when the body has no
//   placeholder (queue::Template::body_has_placeholders), else per message.
//
//   The form the session sends. Given smtp::ContentForm kBdat or kData, Compose
//   leaves env->content in that form (smtp::Envelope::form, eight_bit and
//   message_size set), so the client sends it without another pass: the template
//   is rendered straight into it (queue::Template::Render with RenderFacts: DATA's
//   dot-stuffing and the 8-bit flag come from the compiled template, and only the
//   values are looked at). A signed message is rendered as a message, signed, and
//   then, for DATA only, dot-stuffed in one more pass (smtp::PrepareData), since the
//   signature covers the message as received. What the fast path cannot vouch for
//   takes the old one and leaves kMessage for the client to prepare: a job whose
//   own fields hold a line break or a line starting with '.' (JobPlan::
//   fields_in_smtp_form), a hand-built recipient value with CR or LF, and the 7-bit
//   downgrade. Either way the bytes sent are the same as those of kMessage.
//
// CONTRACT
//   Credentials is immutable after Load and safe to share; a Composer and its
//   JobPlans belong to one thread. The Credentials a Composer was made with or
//   last given (SetCredentials) must outlive its use: volleyd keeps every
//   reload's (engine/reload.h, CONTRACT).
//
// DIAGNOSTICS
//   Load: InvalidArgument/NotFound naming the config table and the file, e.g.
//   "dkim[1] (sender.test, s1): /etc/volley/s1.pem: RSA key of 512 bits ...".
//   CheckJob: InvalidArgument "<field>: <reason>" for the job's .error file.
//   A message that cannot be signed (no From field) goes out unsigned, and the
//   JobPlan remembers why (sign_error) so the engine logs it once per job.
//
// SEE ALSO
//   engine/dkim/dkim.h, engine/token/token.h, queue/job.h, RFC 6376, RFC 8058,
//   RFC 8463, docs/dkim.md.
#ifndef VOLLEY_ENGINE_COMPOSE_H_
#define VOLLEY_ENGINE_COMPOSE_H_

#include <array>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/config.h"
#include "engine/dkim/dkim.h"
#include "engine/smtp/client.h"
#include "engine/token/token.h"
#include "queue/job.h"
#include "queue/template.h"

namespace volley::engine {

class Credentials {
 public:
  // Load - read every [[dkim]] key and [[token_key]] secret the config names.
  // Warnings (short RSA keys, key files other users can read) are appended to
  // *warnings for the caller to print.
  static absl::StatusOr<Credentials> Load(const Config& config,
                                          std::vector<std::string>* warnings);

  // CheckJob - what intake refuses for want of a key: {{unsubscribe_token}} without
  // a [[token_key]]; one-click unsubscribe without a DKIM key for the From domain
  // (RFC 8058 3.3: the signature must cover both List-Unsubscribe fields).
  absl::Status CheckJob(const queue::JobHeader& h, const queue::Template& t) const;

  // ForReload - what a reload hands the shards: `next`'s [[dkim]] keys with the
  // token keys and VERP domain of `running`. Token keys are restart-only: the
  // feedback loop and the unsubscribe endpoint check tokens with the keys volleyd
  // started with, so mail must go on carrying tokens made with those.
  static Credentials ForReload(Credentials next, const Credentials& running);

  const token::Keyring& tokens() const { return tokens_; }

  // DkimSelectors - "domain/selector" of each [[dkim]] key, in config order (logs, tests).
  std::vector<std::string> DkimSelectors() const;

  // DkimDomainFor - the configured [[dkim]] domain that signs mail from `from_domain`
  // (itself or its closest configured parent), or "" when none does.
  std::string_view DkimDomainFor(std::string_view from_domain) const;

 private:
  friend class Composer;
  struct DkimKey {
    DkimKeyConfig config;
    dkim::SignerOptions options;
    std::string pem;
  };
  std::vector<DkimKey> dkim_;
  token::Keyring tokens_;
  std::string verp_domain_;
};

// JobPlan - what Composer works out once per job.
struct JobPlan {
  uint32_t job_no = 0;
  std::string message_id_left;    // the job part of Message-IDs: its id, or "j<job_no>"
  std::string message_id_domain;  // right of '@'
  bool add_message_id = false;
  bool add_date = false;
  bool verp = false;              // MAIL FROM is a signed VERP address
  bool uses_token = false;        // {{unsubscribe_token}} somewhere
  bool sign = false;              // the job may be signed (a key matches, or may per message)
  // The From field's domain is the same for every recipient: signers found once.
  bool from_fixed = true;
  std::vector<size_t> signers;    // indices into the Composer's signers
  uint64_t keys_generation = 0;   // the Composer's signer set `signers` index into
  bool shared_body = false;       // body_hash can be reused
  // The fields the job adds (headers, List-Id, Feedback-ID, the unsubscribe
  // fields, Message-ID's parts) hold no CR or LF, and no field name starts with
  // '.': written out, they are already in SMTP form (Compose, "The form the
  // session sends").
  bool fields_in_smtp_form = false;
  // Cached body hashes by signer position in `signers` and [downgraded].
  std::vector<std::array<std::string, 2>> body_hash;
  std::string sign_error;         // the first signing failure, for one log line
  bool sign_error_logged = false;

  // per_recipient - some of the envelope or the added fields differ between
  // recipients (VERP, token): one recipient per transaction.
  bool per_recipient() const { return verp || uses_token; }
};

class Composer {
 public:
  explicit Composer(const Credentials& credentials);

  std::unique_ptr<JobPlan> Plan(const queue::JobHeader& h, const queue::Template& t,
                                uint32_t job_no) const;

  // Compose - env->mail_from and env->content for the recipient on `line` of the
  // job; env->rcpts must be set (their UTF-8 decides whether the server must take
  // 8-bit data). `caps` are the session's, after EHLO. `form` is the form the
  // session sends (smtp::Client::content_form()); kMessage, the default, leaves
  // env->content the plain message (volleyctl render shows that).
  void Compose(JobPlan& plan, const queue::JobHeader& h, const queue::Template& t,
               const queue::Recipient& r, uint32_t line, absl::Time now,
               const smtp::Capabilities& caps, smtp::Envelope* env,
               smtp::ContentForm form = smtp::ContentForm::kMessage);

  // SetCredentials - sign with `credentials`' [[dkim]] keys from the next Compose
  // on; plans made before are re-planned there. `credentials` must outlive the
  // Composer's use of it (see CONTRACT).
  void SetCredentials(const Credentials& credentials);

  size_t signer_count() const { return signers_.size(); }
  uint64_t keys_generation() const { return keys_generation_; }

 private:
  void LoadSigners();
  // PlanSigners - plan's signers (and sign, body_hash) for the current signer set.
  void PlanSigners(JobPlan& plan, const queue::JobHeader& h) const;
  std::vector<size_t> SignersFor(std::string_view from_domain) const;
  // Sign - prepend plan's DKIM-Signature fields to env->content (a message).
  void Sign(JobPlan& plan, absl::Time now, bool downgraded, smtp::Envelope* env);
  std::string_view DateOf(absl::Time now);

  const Credentials* credentials_;
  std::vector<dkim::Signer> signers_;  // one per Credentials::dkim_ entry, same order
  uint64_t keys_generation_ = 1;       // bumped by SetCredentials
  std::mt19937_64 rng_;
  int64_t date_second_ = -1;
  std::string date_;
};

// FormatRfc5322Date - "Sun, 06 Dec 2026 07:52:29 +0000" (RFC 5322 3.3), in UTC.
std::string FormatRfc5322Date(absl::Time t);

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_COMPOSE_H_
