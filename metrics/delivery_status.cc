// delivery_status.cc - see delivery_status.h
#include "metrics/delivery_status.h"

#include "absl/strings/str_cat.h"
#include "base/strings.h"

namespace volley::metrics {

absl::StatusOr<DeliveryStatus> ParseDeliveryStatus(std::string_view name) {
  for (size_t i = 0; i < kDeliveryStatuses; ++i) {
    if (kDeliveryStatusNames[i] == name) return static_cast<DeliveryStatus>(i);
  }
  std::string known;
  for (std::string_view n : kDeliveryStatusNames) {
    absl::StrAppend(&known, known.empty() ? "" : ", ", base::Sv(n));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown delivery status \"", base::Sv(name),
                                                 "\" (known: ", known, ")"));
}

}  // namespace volley::metrics
