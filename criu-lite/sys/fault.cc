#include "sys/fault.h"

#include <cstdlib>
#include <cstring>

#include "sys/error.h"
#include "sys/log.h"

namespace ckpt::fault {

void point(const char* name) {
  const char* want = getenv("CKPT_FAULT");
  LOG_TRACE("fault point %s", name);
  if (want && strcmp(want, name) == 0) throw Error(std::string("injected fault ") + name);
}

}  // namespace ckpt::fault
