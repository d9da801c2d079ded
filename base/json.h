// json.h - write JSON text safely
//
// SYNOPSIS
//   base::AppendJsonString(&out, value);   // appends "value", quoted and escaped
//
// DESCRIPTION
//   AppendJsonString appends `value` as a quoted JSON string, escaping quotes,
//   backslashes and every control character, so that job data (which may hold
//   anything) can never break a JSON Lines record. Invalid UTF-8 bytes are
//   written as \u00XX escapes of the raw byte rather than passed through.
//   Runs of bytes that need no escape (printable ASCII) are appended whole: the
//   delivery log writes several strings per record, and most need none.
//
// CONTRACT
//   Appends only; any thread. Output is at most 6 bytes per input byte plus 2.
//
// DIAGNOSTICS
//   None: every input has an output.
#ifndef VOLLEY_BASE_JSON_H_
#define VOLLEY_BASE_JSON_H_

#include <string>
#include <string_view>

namespace volley::base {

void AppendJsonString(std::string* out, std::string_view value);

}  // namespace volley::base

#endif  // VOLLEY_BASE_JSON_H_
