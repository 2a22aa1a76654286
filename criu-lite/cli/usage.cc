#include <string>

#include "cli/commands.h"

namespace ckpt::cli {

std::string usage(const std::string& verb) {
  if (verb.empty())
    return "usage: ckpt COMMAND [OPTIONS]\n"
           "\n"
           "Checkpoint and restore Linux process trees.\n"
           "\n"
           "commands:\n"
           "  dump     -t PID -D DIR      save a running tree to an image directory\n"
           "  restore  -D DIR             bring a saved tree back with the same pids\n"
           "  show     -D DIR [IMAGE]     print images as JSON\n"
           "  check                       what this kernel offers and what ckpt needs\n"
           "  run      --name N -- CMD    start CMD as a container (namespaces, cgroup)\n"
           "  ps                          list the containers\n"
           "  kill     NAME               send a signal to a container's init\n"
           "  rm       [-f] NAME...       remove a container\n"
           "  help     [COMMAND]          this text, or a command's options\n"
           "  --version\n"
           "\n"
           "Every command takes -v (more detail), --log-file FILE and --help.\n"
           "Exit status: 0 success, 1 failure, 2 wrong usage.\n";
  if (verb == "dump")
    return "usage: ckpt dump -t PID -D DIR [options]\n"
           "\n"
           "Stops the process tree rooted at PID, saves it into DIR and kills it\n"
           "(or lets it carry on with --leave-running). A dump that fails leaves the\n"
           "tree running as it was. DIR/inventory.img is written last: a directory\n"
           "without it holds no complete checkpoint.\n"
           "\n"
           "  -t, --tree PID         root of the tree to dump\n"
           "  -D, --images-dir DIR   where to write the images (created if missing)\n"
           "  -R, --leave-running    resume the tree after the dump instead of killing it\n"
           "      --compress[=LEVEL] zstd-compress page data (level 1-19, default 1)\n"
           "  -j, --shell-job        a job started from a shell: its session, group leader\n"
           "                         or terminal is outside the tree\n"
           "      --tcp-established  save established TCP connections (TCP repair); their\n"
           "                         packets stay blocked until the restore\n"
           "      --tcp-close        established TCP connections come back closed\n"
           "  -v, --verbose          steps and timings (-vv: every syscall)\n"
           "  -o, --log-file FILE    write the full log to FILE\n";
  if (verb == "restore")
    return "usage: ckpt restore -D DIR [options]\n"
           "\n"
           "Recreates the tree saved in DIR with the same pids and lets it run.\n"
           "Without -d, waits for the restored root and exits with its status.\n"
           "A restore that fails removes every process it created.\n"
           "\n"
           "  -D, --images-dir DIR        the image directory\n"
           "  -d, --restore-detached      return once the tree runs\n"
           "      --pidfile FILE          write the root's pid to FILE\n"
           "  -j, --shell-job             the images are of a shell job: it joins ckpt's\n"
           "                              session and terminal (without -d, as foreground job)\n"
           "      --tcp-established       restore the established TCP connections saved\n"
           "  -v, --verbose               steps and timings (-vv: every syscall)\n"
           "  -o, --log-file FILE         write the full log to FILE\n";
  if (verb == "show")
    return "usage: ckpt show -D DIR [IMAGE]\n"
           "\n"
           "Prints the images of DIR (or only IMAGE, e.g. core-42.img) as JSON.\n"
           "Page data files are summarized, not printed.\n";
  if (verb == "check")
    return "usage: ckpt check\n"
           "\n"
           "Probes the kernel interfaces ckpt uses and prints which are present.\n"
           "Exits 1 if one that dump or restore needs is missing.\n";
  if (verb == "run")
    return "usage: ckpt run --name NAME [options] -- CMD [ARGS...]\n"
           "\n"
           "Starts CMD as pid 1 of a container: new pid, mount, uts, ipc and network\n"
           "namespaces, a cgroup of its own, a fresh /proc. Without -d, waits for CMD,\n"
           "passes SIGINT/SIGTERM/SIGHUP/SIGQUIT on to it and exits with its status.\n"
           "State goes to $CKPT_RUN_DIR (default /run/ckpt), one file per container.\n"
           "\n"
           "      --name NAME         the container's name (letters, digits, _ and -)\n"
           "      --rootfs DIR        root directory (pivot_root); default: the host's /\n"
           "      --hostname H        host name inside\n"
           "      --net MODE          none (default: own network namespace, only lo),\n"
           "                          host (the caller's network namespace), or\n"
           "                          bridge=BR,ip=A.B.C.D/N[,gw=G]: a veth pair, ck-NAME\n"
           "                          on bridge BR, eth0 inside with that address\n"
           "      --memory BYTES      memory limit (suffixes K, M, G, T)\n"
           "  -d, --detach            print NAME PID and return once CMD runs\n"
           "      --log FILE          with -d: stdio of CMD (default $CKPT_RUN_DIR/NAME.log)\n"
           "      --rm                without -d: remove the container when CMD exits\n"
           "  -v, --verbose           steps (-vv: more)\n"
           "  -o, --log-file FILE     write ckpt's own log to FILE\n";
  if (verb == "ps")
    return "usage: ckpt ps\n"
           "\n"
           "Lists the containers of $CKPT_RUN_DIR (default /run/ckpt): NAME, the init's\n"
           "PID on the host, STATUS (running, frozen or exited, as seen now), CREATED\n"
           "and COMMAND.\n";
  if (verb == "kill")
    return "usage: ckpt kill NAME [--signal SIG]\n"
           "\n"
           "Sends SIG (default KILL) to the container's init. An init ignores signals\n"
           "it has no handler for, except KILL and STOP.\n"
           "\n"
           "  -s, --signal SIG       name (TERM, SIGTERM) or number\n";
  if (verb == "rm")
    return "usage: ckpt rm [-f] NAME...\n"
           "\n"
           "Removes a stopped container: its cgroup, host veth, default log and state.\n"
           "\n"
           "  -f, --force            kill it first if it runs\n";
  return "";
}

}  // namespace ckpt::cli
