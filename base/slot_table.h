// NAME
//   slot_table.h - moved: the slot table is the reactor's (engine/reactor/slot_table.h)
//
// SYNOPSIS
//   #include "base/slot_table.h"      // old spelling: base::SlotTable<T>
//   #include "engine/reactor/slot_table.h"   // new: reactor::SlotTable<T>
//
// DESCRIPTION
//   SlotTable names objects by io_uring completion tags, and the tag codec is
//   the reactor's (engine/reactor/tag.h), so the table lives beside it. This
//   alias keeps engine/engine.cc compiling while it is split (issue 17).
//
//   XXX(issue 17): base must not depend on engine/; this header is the one
//   exception, header-only, and goes away once engine code spells
//   reactor::SlotTable.
//
// BOUNDS
//   As engine/reactor/slot_table.h.
#ifndef VOLLEY_BASE_SLOT_TABLE_H_
#define VOLLEY_BASE_SLOT_TABLE_H_

#include "engine/reactor/slot_table.h"

namespace volley::base {

template <typename T>
using SlotTable = reactor::SlotTable<T>;

}  // namespace volley::base

#endif  // VOLLEY_BASE_SLOT_TABLE_H_
