# Shared by scripts/demo and scripts/bench (sourced, not run).

# detached CMD ARGS...: runs CMD in a new session, stdio on /dev/null and no
# other inherited fds: a pipe to a process outside the tree (a terminal
# multiplexer, a CI runner) could not be checkpointed with it.
detached() {
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      (( fd > 2 )) && eval "exec $fd>&-"
    done
    exec setsid "$@" </dev/null >/dev/null 2>&1
  ) &
  # Not a job of ours: killing it (a dump does) is not news for the shell.
  disown $!
}
