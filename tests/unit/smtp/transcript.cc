// transcript.cc - see transcript.h.
#include "transcript.h"

#include <deque>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace volley::smtp {
namespace {

absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::string_view KindName(Outcome::Kind k) {
  switch (k) {
    case Outcome::Kind::kAccepted:
      return "accepted";
    case Outcome::Kind::kTransient:
      return "transient";
    case Outcome::Kind::kPermanent:
      return "permanent";
  }
  return "?";
}

std::string_view WaitName(Wait w) {
  switch (w) {
    case Wait::kNone:
      return "none";
    case Wait::kGreeting:
      return "greeting";
    case Wait::kEhlo:
      return "ehlo";
    case Wait::kTlsHandshake:
      return "tls-handshake";
    case Wait::kMail:
      return "mail";
    case Wait::kRcpt:
      return "rcpt";
    case Wait::kDataInit:
      return "data-init";
    case Wait::kDataDone:
      return "data-done";
    case Wait::kRset:
      return "rset";
    case Wait::kQuit:
      return "quit";
  }
  return "?";
}

std::string Unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    char c = s[++i];
    if (c == 'r') {
      out += '\r';
    } else if (c == 'n') {
      out += '\n';
    } else if (c == 'x' && i + 2 < s.size()) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

// Escape - make client output readable in a failure message.
std::string Escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::vector<std::string_view> Lines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return lines;
}

class Replayer {
 public:
  explicit Replayer(FeedMode mode) : mode_(mode) {}

  std::string Run(std::string_view transcript) {
    std::vector<std::string_view> lines = Lines(transcript);
    char prev = 0;
    for (size_t i = 0; i < lines.size() && error_.empty(); ++i) {
      line_no_ = i + 1;
      std::string_view line = lines[i];
      if (line.empty() || line[0] == '#') continue;
      char type = line[0];
      if (prev == 'S' && type != 'S' && type != 'R') FlushServer();
      if (prev == 'C' && type != 'C') FlushClient();
      if (!error_.empty()) break;
      std::string_view rest = line.size() > 3 ? line.substr(3) : std::string_view();
      if (line.size() < 2 || (line[1] != ':' && type != '!')) {
        return Fail("unparsable transcript line");
      }
      switch (type) {
        case 'S':
          server_ += std::string(rest) + "\r\n";
          break;
        case 'R':
          server_ += Unescape(rest);
          type = 'S';
          break;
        case 'C':
          want_out_ += std::string(rest) + "\r\n";
          break;
        case 'M':
          if (message_) {
            *message_ += '\n';
          } else {
            message_.emplace();
          }
          *message_ += rest;
          break;
        case 'E':
          CheckEvent(rest);
          break;
        case '!':
          Directive(line.substr(1), i == FirstDirectiveLine(lines));
          break;
        default:
          return Fail("unknown line type");
      }
      prev = type;
    }
    if (error_.empty() && prev == 'S') FlushServer();
    if (error_.empty() && prev == 'C') FlushClient();
    if (!error_.empty()) return error_;
    line_no_ = lines.size();
    client_ready();
    if (!client_->PendingOutput().empty()) {
      return Fail(absl::StrCat("client output left unchecked:\n",
                               Escape(client_->PendingOutput())));
    }
    Drain();
    if (!events_.empty()) {
      return Fail(absl::StrCat("event left unchecked: ", events_.front()));
    }
    return error_;
  }

 private:
  static size_t FirstDirectiveLine(const std::vector<std::string_view>& lines) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (!lines[i].empty() && lines[i][0] != '#') return i;
    }
    return 0;
  }

  std::string Fail(std::string_view what) {
    if (error_.empty()) error_ = absl::StrCat("line ", line_no_, ": ", Av(what));
    return error_;
  }

  // client_ready - create the client once the options (if any) have been read.
  void client_ready() {
    if (!client_) client_.emplace(opts_);
  }

  void Drain() {
    client_ready();
    for (;;) {
      Event ev = client_->Next();
      if (std::holds_alternative<NeedData>(ev)) return;
      events_.push_back(DescribeEvent(ev));
    }
  }

  void FlushServer() {
    client_ready();
    if (!client_->PendingOutput().empty()) {
      Fail(absl::StrCat("client output not in the transcript before server input:\n",
                        Escape(client_->PendingOutput())));
      return;
    }
    std::string_view s = server_;
    switch (mode_.kind) {
      case FeedMode::Kind::kWhole:
        client_->Feed(s);
        Drain();
        break;
      case FeedMode::Kind::kByte:
        for (char c : s) {
          client_->Feed(std::string_view(&c, 1));
          Drain();
        }
        break;
      case FeedMode::Kind::kSplit: {
        size_t at = std::min(mode_.split, s.size());
        client_->Feed(s.substr(0, at));
        Drain();
        client_->Feed(s.substr(at));
        Drain();
        break;
      }
    }
    server_.clear();
  }

  void FlushClient() {
    client_ready();
    std::string got(client_->PendingOutput());
    if (got != want_out_) {
      Fail(absl::StrCat("client output differs\n--- got:\n", Escape(got), "\n--- want:\n",
                        Escape(want_out_)));
      return;
    }
    client_->ConsumeOutput(got.size());
    want_out_.clear();
  }

  void CheckEvent(std::string_view want) {
    Drain();
    if (events_.empty()) {
      Fail(absl::StrCat("want event \"", Av(want), "\", got none"));
      return;
    }
    std::string got = std::move(events_.front());
    events_.pop_front();
    if (got != want)
      Fail(absl::StrCat("got event \"", got, "\", want \"", Av(want), "\""));
  }

  void Directive(std::string_view text, bool first) {
    std::vector<std::string> words = absl::StrSplit(Av(text), ' ', absl::SkipEmpty());
    if (words.empty()) {
      Fail("empty directive");
      return;
    }
    const std::string& verb = words[0];
    if (verb == "options") {
      if (!first || client_) {
        Fail("options must come first");
        return;
      }
      for (size_t i = 1; i < words.size(); ++i) {
        std::pair<std::string, std::string> kv = absl::StrSplit(words[i], '=');
        size_t n = 0;
        if (kv.first == "ehlo") {
          opts_.ehlo_name = kv.second;
        } else if (kv.first == "tls" && kv.second == "off") {
          opts_.tls = TlsPolicy::kOff;
        } else if (kv.first == "tls" && kv.second == "opportunistic") {
          opts_.tls = TlsPolicy::kOpportunistic;
        } else if (kv.first == "tls" && kv.second == "required") {
          opts_.tls = TlsPolicy::kRequired;
        } else if (kv.first == "chunking" && (kv.second == "on" || kv.second == "off")) {
          opts_.chunking = kv.second == "on";
        } else if (kv.first == "pipelining" && (kv.second == "on" || kv.second == "off")) {
          opts_.pipelining = kv.second == "on";
        } else if (absl::SimpleAtoi(kv.second, &n) && kv.first == "pipeline") {
          opts_.max_pipeline_bytes = n;
        } else if (absl::SimpleAtoi(kv.second, &n) && kv.first == "transactions") {
          opts_.max_transactions_in_flight = n;
        } else if (absl::SimpleAtoi(kv.second, &n) && kv.first == "max_line") {
          opts_.reply.max_line = n;
        } else if (absl::SimpleAtoi(kv.second, &n) && kv.first == "max_lines") {
          opts_.reply.max_lines = n;
        } else {
          Fail(absl::StrCat("bad option ", words[i]));
        }
      }
      return;
    }
    client_ready();
    if (verb == "start") {
      Envelope env;
      for (size_t i = 1; i < words.size(); ++i) {
        std::pair<std::string, std::string> kv = absl::StrSplit(words[i], '=');
        if (kv.first == "id") {
          if (!absl::SimpleAtoi(kv.second, &env.id)) Fail("bad id");
        } else if (kv.first == "from") {
          env.mail_from = kv.second == "<>" ? "" : kv.second;
        } else if (kv.first == "to") {
          env.rcpts = absl::StrSplit(kv.second, ',');
        } else {
          Fail(absl::StrCat("bad start argument ", words[i]));
        }
      }
      env.content = message_.value_or("");
      message_.reset();
      absl::Status st = client_->StartTransaction(std::move(env));
      if (!st.ok()) Fail(absl::StrCat("StartTransaction: ", st.ToString()));
    } else if (verb == "quit") {
      client_->Quit();
    } else if (verb == "tls-established") {
      client_->TlsEstablished();
    } else if (verb == "eof") {
      client_->FeedEof();
      Drain();
    } else if (verb == "timeout") {
      client_->FeedTimeout();
      Drain();
    } else if (verb == "ioerror") {
      client_->FeedIoError(words.size() > 1 ? words[1] : "error");
      Drain();
    } else if (verb == "wait") {
      std::string_view got = WaitName(client_->waiting_for());
      if (words.size() < 2 || got != words[1]) {
        Fail(absl::StrCat("waiting_for() is ", Av(got)));
      }
    } else {
      Fail(absl::StrCat("unknown directive ", verb));
    }
  }

  FeedMode mode_;
  ClientOptions opts_;
  std::optional<Client> client_;
  std::string server_;
  std::string want_out_;
  std::optional<std::string> message_;
  std::deque<std::string> events_;
  size_t line_no_ = 0;
  std::string error_;
};

}  // namespace

std::string DescribeOutcome(const Outcome& o) {
  return absl::StrCat(Av(KindName(o.kind)), ":", o.code, ":", o.enhanced, ":",
                      Av(StageName(o.stage)));
}

std::string DescribeEvent(const Event& ev) {
  if (std::holds_alternative<NeedData>(ev)) return "need-data";
  if (const auto* r = std::get_if<SessionReady>(&ev)) {
    const Capabilities& c = r->caps;
    std::string s = "ready";
    if (c.esmtp) s += " esmtp";
    if (c.pipelining) s += " pipelining";
    if (c.eight_bit_mime) s += " 8bitmime";
    if (c.smtputf8) s += " smtputf8";
    if (c.enhanced_status_codes) s += " enhancedstatuscodes";
    if (c.chunking) s += " chunking";
    if (c.starttls) s += " starttls";
    if (c.size) s += " size";
    if (c.size_limit) absl::StrAppend(&s, "=", *c.size_limit);
    if (r->tls) s += " tls";
    return s;
  }
  if (std::holds_alternative<StartTls>(ev)) return "starttls";
  if (const auto* d = std::get_if<TransactionDone>(&ev)) {
    std::string s = absl::StrCat("done ", d->id);
    for (const Outcome& o : d->rcpt_outcomes)
      absl::StrAppend(&s, " ", DescribeOutcome(o));
    return s;
  }
  const auto& c = std::get<SessionClosed>(ev);
  return absl::StrCat("closed ", DescribeOutcome(c.reason));
}

std::string ReplayTranscript(std::string_view transcript, FeedMode mode) {
  return Replayer(mode).Run(transcript);
}

size_t LongestServerBlock(std::string_view transcript) {
  size_t longest = 0;
  size_t block = 0;
  for (std::string_view line : Lines(transcript)) {
    if (line.empty() || line[0] == '#') continue;
    if (line.rfind("S:", 0) == 0) {
      block += (line.size() > 3 ? line.size() - 3 : 0) + 2;
    } else if (line.rfind("R:", 0) == 0) {
      block += Unescape(line.size() > 3 ? line.substr(3) : std::string_view()).size();
    } else {
      block = 0;
    }
    longest = std::max(longest, block);
  }
  return longest;
}

}  // namespace volley::smtp
