// Ctrl-C and SIGTERM during a long command: the CLI installs handlers that
// only set a flag; the pipelines call check() between steps and in their
// copy loops and unwind through their normal error path (thaw, clean up).
#pragma once

namespace ckpt::cancel {

void install_handlers();  // SIGINT, SIGTERM, SIGHUP -> flag
bool requested();
void check();  // throws Error("interrupted by signal N") once requested

}  // namespace ckpt::cancel
