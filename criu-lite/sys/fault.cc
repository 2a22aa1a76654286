#include "sys/fault.h"

#include <cstdlib>
#include <cstring>

#include "sys/error.h"
#include "sys/log.h"

namespace ckpt::fault {

bool armed(const char* name) {
  const char* want = getenv("CKPT_FAULT");
  return want && strcmp(want, name) == 0;
}

void point(const char* name) {
  LOG_TRACE("fault point %s", name);
  if (armed(name)) throw Error(std::string("injected fault ") + name);
}

}  // namespace ckpt::fault
