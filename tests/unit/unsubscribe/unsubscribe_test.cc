// unsubscribe_test.cc - the one-click unsubscribe endpoint over real HTTP on
// loopback (libcurl as the client, as a mailbox provider's would be), and its
// rate table and client address with time and headers in hand.
#include "engine/unsubscribe.h"

#include <curl/curl.h>

#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/http/server.h"
#include "gtest/gtest.h"

namespace volley::engine {
namespace {

constexpr uint32_t kJob = 7;
constexpr uint32_t kLine = 42;

token::Keyring Keys(std::string id = "k1", char fill = 's') {
  auto keys = token::Keyring::FromSecrets({{std::move(id), std::string(40, fill)}});
  EXPECT_TRUE(keys.ok()) << keys.status();
  return *std::move(keys);
}

struct Reply {
  long status = 0;
  std::string headers;  // as received, lower-cased names not guaranteed
  std::string body;
  bool Has(std::string_view header_line) const {
    return headers.find(header_line) != std::string::npos;
  }
};

size_t Append(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

// Request - one request with libcurl; `multipart` sends `fields` as
// multipart/form-data, else `body` as it is with `content_type`.
struct Request {
  std::string method = "GET";
  std::string body;
  std::string content_type = "application/x-www-form-urlencoded";
  std::vector<std::pair<std::string, std::string>> multipart;
  std::vector<std::string> extra_headers;
};

Reply Send(const std::string& url, const Request& r) {
  Reply reply;
  CURL* curl = curl_easy_init();
  curl_slist* headers = nullptr;
  curl_mime* mime = nullptr;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);  // a redirect must show as one
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 20L);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Append);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply.body);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, Append);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &reply.headers);
  if (!r.multipart.empty()) {
    mime = curl_mime_init(curl);
    for (const auto& [name, value] : r.multipart) {
      curl_mimepart* part = curl_mime_addpart(mime);
      curl_mime_name(part, name.c_str());
      curl_mime_data(part, value.c_str(), CURL_ZERO_TERMINATED);
    }
    curl_easy_setopt(curl, CURLOPT_MIMEPOST, mime);
  } else if (r.method == "POST" || !r.body.empty()) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, r.body.c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(r.body.size()));
    headers = curl_slist_append(headers, ("Content-Type: " + r.content_type).c_str());
  }
  if (r.method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (r.method != "GET" && r.method != "POST") {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, r.method.c_str());
  }
  for (const std::string& h : r.extra_headers) headers = curl_slist_append(headers, h.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  const CURLcode rc = curl_easy_perform(curl);
  EXPECT_EQ(rc, CURLE_OK) << curl_easy_strerror(rc) << " " << url;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply.status);
  curl_mime_free(mime);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return reply;
}

Request OneClick() {
  Request r;
  r.method = "POST";
  r.body = "List-Unsubscribe=One-Click";
  return r;
}

class UnsubscribeTest : public ::testing::Test {
 protected:
  void SetUp() override { Begin(UnsubscribeOptions{}); }

  // Begin - (re)start the endpoint with `options` (listen is set here).
  void Begin(UnsubscribeOptions options) {
    server_.reset();
    options.listen = "127.0.0.1:0";
    auto s = UnsubscribeServer::Create(
        options, keys_, [this](const token::Claim& c, std::string_view client) {
          std::lock_guard<std::mutex> lock(mu_);
          calls_.push_back({c, std::string(client)});
          if (gone_) return absl::NotFoundError("job 7 is not in the queue");
          return fail_ ? absl::UnavailableError("suppression store busy") : absl::OkStatus();
        });
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    server_->Start();
    base_ = absl::StrCat("http://", server_->address());
  }

  size_t Calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_.size();
  }

  std::string Token() const { return token::Issue(keys_, token::Purpose::kUnsubscribe, kJob, kLine); }

  struct Call {
    token::Claim claim;
    std::string client;
  };
  token::Keyring keys_ = Keys();
  std::mutex mu_;
  std::vector<Call> calls_;
  bool fail_ = false;
  bool gone_ = false;
  std::unique_ptr<UnsubscribeServer> server_;
  std::string base_;
};

// Every answer of the endpoint: no caching, no redirect, no framing.
void ExpectCommon(const Reply& r) {
  EXPECT_TRUE(r.Has("Cache-Control: no-store\r\n")) << r.headers;
  EXPECT_TRUE(r.Has("Content-Type: text/html; charset=utf-8\r\n")) << r.headers;
  EXPECT_FALSE(r.status >= 300 && r.status < 400) << r.status;
  EXPECT_FALSE(r.Has("Location:")) << r.headers;
}

TEST_F(UnsubscribeTest, UrlEncodedPostWithTokenInThePath) {
  const Reply r = Send(absl::StrCat(base_, "/u/", Token()), OneClick());
  EXPECT_EQ(r.status, 200) << r.body;
  ExpectCommon(r);
  EXPECT_NE(r.body.find("You have been unsubscribed."), std::string::npos) << r.body;
  ASSERT_EQ(Calls(), 1u);
  EXPECT_EQ(calls_[0].claim.job_no, kJob);
  EXPECT_EQ(calls_[0].claim.line, kLine);
  EXPECT_EQ(calls_[0].claim.key_id, "k1");
  EXPECT_EQ(calls_[0].client, "127.0.0.1");
}

TEST_F(UnsubscribeTest, MultipartPostWithTokenInTheQuery) {
  Request req;
  req.method = "POST";
  req.multipart = {{"List-Unsubscribe", "One-Click"}};
  const Reply r = Send(absl::StrCat(base_, "/unsubscribe?token=", Token()), req);
  EXPECT_EQ(r.status, 200) << r.body;
  ExpectCommon(r);
  ASSERT_EQ(Calls(), 1u);
  EXPECT_EQ(calls_[0].claim.job_no, kJob);
  EXPECT_EQ(calls_[0].claim.line, kLine);
}

TEST_F(UnsubscribeTest, FormVariantsThatAreStillOneClick) {
  const std::string url = absl::StrCat(base_, "/u/", Token(), "/");  // trailing slash
  Request charset = OneClick();
  charset.content_type = "application/x-www-form-urlencoded; charset=UTF-8";
  EXPECT_EQ(Send(url, charset).status, 200);
  Request more = OneClick();
  more.body = "utm=a%20b&List-Unsubscribe=one-click&x=";
  EXPECT_EQ(Send(url, more).status, 200);
  Request multipart;
  multipart.method = "POST";
  multipart.multipart = {{"other", "x"}, {"List-Unsubscribe", "One-Click"}};
  EXPECT_EQ(Send(url, multipart).status, 200);
  // The query names the token; other parameters beside it do no harm.
  EXPECT_EQ(Send(absl::StrCat(base_, "/x?a=1&token=", Token(), "&b=2"), OneClick()).status, 200);
  EXPECT_EQ(Calls(), 4u);
}

TEST_F(UnsubscribeTest, GetShowsAButtonAndChangesNothing) {
  for (const std::string& url : {absl::StrCat(base_, "/u/", Token()),
                                 absl::StrCat(base_, "/?token=", Token())}) {
    const Reply r = Send(url, Request{});
    EXPECT_EQ(r.status, 200) << url;
    ExpectCommon(r);
    EXPECT_NE(r.body.find("<form method=\"post\">"), std::string::npos) << r.body;
    EXPECT_NE(r.body.find("name=\"List-Unsubscribe\" value=\"One-Click\""), std::string::npos);
    EXPECT_EQ(r.body.find(Token()), std::string::npos) << "the page echoes nothing";
  }
  Request head;
  head.method = "HEAD";
  EXPECT_EQ(Send(absl::StrCat(base_, "/u/", Token()), head).status, 200);
  EXPECT_EQ(Calls(), 0u);
}

TEST_F(UnsubscribeTest, BadTokensAre400AndCallNothing) {
  std::string forged = Token();
  forged[forged.size() - 3] = forged[forged.size() - 3] == 'a' ? 'b' : 'a';
  const token::Keyring other = Keys("k1", 'o');  // same id, another secret
  const std::vector<std::string> bad = {
      forged,
      token::Issue(keys_, token::Purpose::kVerp, kJob, kLine),
      token::Issue(other, token::Purpose::kUnsubscribe, kJob, kLine),
      token::Issue(Keys("k9"), token::Purpose::kUnsubscribe, kJob, kLine),
      "garbage",
      "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
      std::string(300, 'a'),
  };
  for (const std::string& t : bad) {
    for (const std::string& url : {absl::StrCat(base_, "/u/", t), absl::StrCat(base_, "/?token=", t)}) {
      const Reply post = Send(url, OneClick());
      EXPECT_EQ(post.status, 400) << url;
      ExpectCommon(post);
      EXPECT_EQ(post.body.find("script"), std::string::npos) << post.body;
      EXPECT_EQ(post.body.find("garbage"), std::string::npos) << post.body;
      const Reply get = Send(url, Request{});
      EXPECT_EQ(get.status, 400) << url;
      EXPECT_EQ(get.body.find("<form"), std::string::npos) << get.body;
    }
  }
  // No token at all, and an empty token parameter.
  EXPECT_EQ(Send(absl::StrCat(base_, "/"), OneClick()).status, 400);
  EXPECT_EQ(Send(absl::StrCat(base_, "/u/", Token(), "?token="), OneClick()).status, 400);
  EXPECT_EQ(Calls(), 0u);
}

TEST_F(UnsubscribeTest, PostWithoutTheFieldIs400) {
  const std::string url = absl::StrCat(base_, "/u/", Token());
  for (const std::string& body : {std::string(""), std::string("List-Unsubscribe=Yes"),
                                  std::string("list-unsubscribe=One-Click"),
                                  std::string("foo=bar")}) {
    Request r = OneClick();
    r.body = body;
    const Reply got = Send(url, r);
    EXPECT_EQ(got.status, 400) << body;
    ExpectCommon(got);
  }
  Request plain = OneClick();
  plain.content_type = "text/plain";  // the right words, not a form
  EXPECT_EQ(Send(url, plain).status, 400);
  Request multipart;
  multipart.method = "POST";
  multipart.multipart = {{"List-Unsubscribe", "Later"}};
  EXPECT_EQ(Send(url, multipart).status, 400);
  Request broken = OneClick();
  broken.content_type = "multipart/form-data; boundary=xyz";  // a body that is not one
  EXPECT_EQ(Send(url, broken).status, 400);
  Request many = OneClick();  // more fields than http::kMaxFormFields
  many.body.clear();
  for (size_t i = 0; i <= http::kMaxFormFields; ++i) absl::StrAppend(&many.body, "f=", i, "&");
  many.body += "List-Unsubscribe=One-Click";
  EXPECT_EQ(Send(url, many).status, 400);
  EXPECT_EQ(Calls(), 0u);
}

TEST_F(UnsubscribeTest, BodiesOverTheBoundAre413AndUnlengthedFormsAre411) {
  UnsubscribeOptions options;
  options.max_request_bytes = 2048;
  Begin(options);
  const std::string url = absl::StrCat(base_, "/u/", Token());
  Request big = OneClick();
  big.body = absl::StrCat("List-Unsubscribe=One-Click&pad=", std::string(4096, 'x'));
  Reply r = Send(url, big);
  EXPECT_EQ(r.status, 413);
  ExpectCommon(r);
  big.content_type = "text/plain";
  EXPECT_EQ(Send(url, big).status, 413);
  Request chunked = OneClick();
  chunked.extra_headers = {"Transfer-Encoding: chunked"};
  EXPECT_EQ(Send(url, chunked).status, 411);
  EXPECT_EQ(Calls(), 0u);
  // Within the bound, all is well.
  EXPECT_EQ(Send(url, OneClick()).status, 200);
}

TEST_F(UnsubscribeTest, OverTheRateIs429WithRetryAfter) {
  UnsubscribeOptions options;
  options.rate_per_minute = 3;
  Begin(options);
  const std::string url = absl::StrCat(base_, "/u/", Token());
  EXPECT_EQ(Send(url, Request{}).status, 200);
  EXPECT_EQ(Send(url, Request{}).status, 200);
  EXPECT_EQ(Send(url, OneClick()).status, 200);
  const Reply r = Send(url, OneClick());
  EXPECT_EQ(r.status, 429);
  ExpectCommon(r);
  EXPECT_TRUE(r.Has("Retry-After: ")) << r.headers;
  EXPECT_EQ(Calls(), 1u);
}

TEST_F(UnsubscribeTest, OtherMethodsAre405WithAllow) {
  for (const char* method : {"PUT", "DELETE", "OPTIONS", "PATCH"}) {
    Request r = OneClick();
    r.method = method;
    const Reply got = Send(absl::StrCat(base_, "/u/", Token()), r);
    EXPECT_EQ(got.status, 405) << method;
    ExpectCommon(got);
    EXPECT_TRUE(got.Has("Allow: GET, HEAD, POST\r\n")) << got.headers;
  }
  EXPECT_EQ(Calls(), 0u);
}

TEST_F(UnsubscribeTest, HandlerFailureIs503SoTheProviderRetries) {
  fail_ = true;
  const std::string url = absl::StrCat(base_, "/u/", Token());
  const Reply r = Send(url, OneClick());
  EXPECT_EQ(r.status, 503);
  ExpectCommon(r);
  EXPECT_TRUE(r.Has("Retry-After: 60\r\n")) << r.headers;
  EXPECT_EQ(r.body.find("unsubscribed."), std::string::npos) << r.body;
  fail_ = false;
  EXPECT_EQ(Send(url, OneClick()).status, 200);
  EXPECT_EQ(Calls(), 2u);
}

TEST_F(UnsubscribeTest, ALinkWhoseRecipientIsGoneIs410NotARetry) {
  gone_ = true;
  const Reply r = Send(absl::StrCat(base_, "/u/", Token()), OneClick());
  EXPECT_EQ(r.status, 410);
  ExpectCommon(r);
  EXPECT_FALSE(r.Has("Retry-After")) << r.headers;
  EXPECT_EQ(r.body.find("You have been unsubscribed."), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("no longer known"), std::string::npos) << r.body;
  EXPECT_EQ(Calls(), 1u);
}

TEST(UnsubscribeCreateTest, RefusesWhatCannotWork) {
  UnsubscribeOptions options;
  options.listen = "127.0.0.1:0";
  const auto handler = [](const token::Claim&, std::string_view) { return absl::OkStatus(); };
  auto no_keys = UnsubscribeServer::Create(options, token::Keyring(), handler);
  EXPECT_EQ(no_keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(no_keys.status().message().find("[[token_key]]"), std::string_view::npos);
  EXPECT_EQ(UnsubscribeServer::Create(options, Keys(), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.listen = "localhost:0";
  EXPECT_EQ(UnsubscribeServer::Create(options, Keys(), handler).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.listen = "127.0.0.1:0";
  options.trusted_proxies = {"proxy.test"};
  EXPECT_EQ(UnsubscribeServer::Create(options, Keys(), handler).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ClientRateTest, ABucketPerClientRefilledOverTime) {
  ClientRate rate(2, 100);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_TRUE(rate.Admit("a", t0).admitted);
  EXPECT_TRUE(rate.Admit("a", t0).admitted);
  ClientRate::Verdict v = rate.Admit("a", t0);
  EXPECT_FALSE(v.admitted);
  EXPECT_TRUE(v.first_refusal);
  EXPECT_EQ(v.retry_after, absl::Seconds(30));  // one token every 30 s
  EXPECT_FALSE(rate.Admit("a", t0 + absl::Seconds(10)).first_refusal);
  EXPECT_TRUE(rate.Admit("b", t0).admitted);  // another client, its own bucket
  EXPECT_TRUE(rate.Admit("a", t0 + absl::Seconds(45)).admitted);
  EXPECT_FALSE(rate.Admit("a", t0 + absl::Seconds(45)).admitted);
  // A full bucket holds a minute's worth, no more, however long the wait.
  const absl::Time later = t0 + absl::Hours(5);
  EXPECT_TRUE(rate.Admit("a", later).admitted);
  EXPECT_TRUE(rate.Admit("a", later).admitted);
  EXPECT_FALSE(rate.Admit("a", later).admitted);
  ClientRate off(0, 100);
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(off.Admit("a", t0).admitted);
  EXPECT_EQ(off.clients(), 0u);
}

TEST(ClientRateTest, TheLeastRecentlySeenIsForgottenFirst) {
  ClientRate rate(1, 2);
  const absl::Time t = absl::FromUnixSeconds(1000);
  EXPECT_TRUE(rate.Admit("a", t).admitted);
  EXPECT_TRUE(rate.Admit("b", t).admitted);
  EXPECT_FALSE(rate.Admit("a", t).admitted);  // a is now the most recent
  EXPECT_TRUE(rate.Admit("c", t).admitted);   // b is forgotten, not a
  EXPECT_EQ(rate.clients(), 2u);
  EXPECT_FALSE(rate.Admit("a", t).admitted);
  EXPECT_TRUE(rate.Admit("b", t).admitted);  // forgotten: a full bucket again
}

TEST(ClientAddressTest, ForwardedForOnlyFromATrustedProxy) {
  http::Request r;
  r.remote_address = "127.0.0.1";
  r.headers = {{"X-Forwarded-For", "203.0.113.9"}};
  EXPECT_EQ(ClientAddress(r, {}), "127.0.0.1");  // not trusted: never believed
  const std::vector<std::string> proxies = {"127.0.0.1", "10.0.0.2"};
  EXPECT_EQ(ClientAddress(r, proxies), "203.0.113.9");
  // The client wrote the left entries; the proxies appended the right ones.
  r.headers = {{"X-Forwarded-For", "198.51.100.1, 203.0.113.9 ,10.0.0.2"}};
  EXPECT_EQ(ClientAddress(r, proxies), "203.0.113.9");
  r.headers = {{"X-Forwarded-For", "1.1.1.1"}, {"x-forwarded-for", "2001:DB8::0:1"}};
  EXPECT_EQ(ClientAddress(r, proxies), "2001:db8::1");
  r.headers = {{"X-Forwarded-For", "203.0.113.9, unknown"}};
  EXPECT_EQ(ClientAddress(r, proxies), "127.0.0.1");
  r.headers = {};
  EXPECT_EQ(ClientAddress(r, proxies), "127.0.0.1");
  r.remote_address = "192.0.2.7";
  r.headers = {{"X-Forwarded-For", "203.0.113.9"}};
  EXPECT_EQ(ClientAddress(r, proxies), "192.0.2.7");
}

}  // namespace
}  // namespace volley::engine
