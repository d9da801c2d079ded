// content.h - turn a rendered message into SMTP DATA bytes
//
// SYNOPSIS
//   std::string PrepareData(std::string_view message);
//   std::string PrepareData(std::string_view message, uint64_t* message_size);
//   std::string PrepareBdat(std::string_view message, uint64_t* message_size);
//   std::string MessageFromData(std::string_view data);
//   enum class ContentForm { kMessage, kBdat, kData };
//   bool HasEightBit(std::string_view message);
//   absl::StatusOr<std::string> DowngradeTo7Bit(std::string_view message);
//   absl::Status CheckLineLengths(std::string_view message, size_t max = 998);
//
// DESCRIPTION
//   PrepareData returns what the client writes after a 354 reply: the message with
//   every line ending (CRLF, bare CR or bare LF) written as CRLF, a '.' doubled at the
//   start of any line that begins with one (RFC 5321 section 4.5.2), one CRLF added if
//   the message does not end with a line ending, and the terminating ".\r\n". Bare CR
//   and bare LF are normalised rather than sent because servers disagree on what they
//   mean, and a disagreement about line ends is how "SMTP smuggling" hides a second
//   message inside the first. An empty message becomes the lone ".\r\n".
//
//   With message_size, also stores the RFC 1870 size of the message: octets after
//   normalisation, CRLFs included, without dot-stuffing and without the final ".\r\n".
//
//   PrepareBdat is the same for BDAT (RFC 3030): line endings normalised and the final
//   CRLF added once, but no dot-stuffing and no terminating line, since BDAT counts
//   octets instead; *message_size is then the returned string's size.
//
//   MessageFromData undoes PrepareData for a message it prepared: the final ".\r\n"
//   dropped and a doubled '.' at the start of a line made single again, so that
//   MessageFromData(PrepareData(m)) == PrepareBdat(m) for every m. It is the way
//   back for a message prepared for DATA that has to be sent otherwise (BDAT, or
//   converted to 7 bits): a rare path, so it is a plain second pass.
//
//   ContentForm names what a piece of content is (smtp::Envelope::form): kMessage a
//   rendered message, which the client prepares itself; kBdat what PrepareBdat
//   returns (every line ending CRLF, the last line ended, nothing else changed);
//   kData what PrepareData returns. Whoever renders a message can write it in the
//   form the session sends (engine/compose.h), sparing the client a second and a
//   third pass over it (preparation and the 8-bit scan).
//
//   HasEightBit says whether any octet is 0x80 or above (base::HasEightBit).
//
//   DowngradeTo7Bit is for a server without 8BITMIME (RFC 6152 section 3 forbids
//   sending it 8-bit octets): a single-part message whose 8-bit octets are all in the
//   body comes back with the body as quoted-printable (RFC 2045 section 6.7, lines of
//   at most 76 octets), its Content-Transfer-Encoding field replaced and MIME-Version
//   added when missing. Anything it cannot convert faithfully is an error naming why.
//
//   CheckLineLengths reports the first line longer than `max` octets (line ending not
//   counted, line ends recognised as above): RFC 5321 section 4.5.3.1.6 allows 998 plus
//   CRLF. The renderer should fold or encode long lines; the client itself does not
//   refuse them.
//
// DIAGNOSTICS
//   DowngradeTo7Bit: InvalidArgument for 8-bit octets in the header section, in a
//   multipart or message/* entity (XXX(scope) MIME parts are not converted), or in a
//   body that already declares quoted-printable or base64.
//   CheckLineLengths: InvalidArgument "line N is X octets, over 998" (N from 1).
//
// NOTES
//   CheckLineLengths measures lines before dot-stuffing, so a 998-octet line that
//   starts with '.' goes out as 999 octets: RFC 5321 section 4.5.3.1.6 does not count
//   "the leading dot duplicated for transparency".
#ifndef VOLLEY_ENGINE_SMTP_CONTENT_H_
#define VOLLEY_ENGINE_SMTP_CONTENT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace volley::smtp {

std::string PrepareData(std::string_view message);
std::string PrepareData(std::string_view message, uint64_t* message_size);
std::string PrepareBdat(std::string_view message, uint64_t* message_size);
std::string MessageFromData(std::string_view data);

enum class ContentForm : uint8_t { kMessage, kBdat, kData };

bool HasEightBit(std::string_view message);
absl::StatusOr<std::string> DowngradeTo7Bit(std::string_view message);

absl::Status CheckLineLengths(std::string_view message, size_t max = 998);

}  // namespace volley::smtp

#endif  // VOLLEY_ENGINE_SMTP_CONTENT_H_
