// The network lock: while a tree is stopped (and, when the dump kills it,
// until it is restored), packets of its connections must not reach the
// kernel, which would answer them with a reset since no socket holds those
// connections any more; nor must our side send anything.
//
// In the host's network namespace the lock is an nftables table (family
// inet, named after the tree) that drops exactly the packets of the dumped
// connections, both ways; in a container's own network namespace it drops
// everything but loopback inside that namespace.
//
// Call order, dump:    prepare() before the tree stops, if it can; then
//                      a tree with its own network namespace: lock_netns()
//                      first; then add() for each connection before it is
//                      put in repair mode (with lock_netns, add() only
//                      records it); image() is saved; then lift() before
//                      the thaw and unlock() after it (--leave-running), or
//                      keep() after the kill.
// Call order, restore: relock() from the image before any socket is
//                      created; with an image of a whole namespace
//                      (whole_netns(image)), lock_netns() on the new
//                      namespace before it is configured instead;
//                      lift() just before the tree runs, unlock() after.
// The destructor removes the table unless keep() was called, so a failure
// at any step never leaves the lock behind.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "image/image_io.h"
#include "sockets.pb.h"
#include "sys/fd.h"
#include "sys/nftables.h"

namespace ckpt {

constexpr const char* kNetLockImage = "netlock.img";
// Packets with this mark (SO_MARK) pass the lock: the restore's own, which
// refill the queues of locked sockets over loopback.
constexpr uint32_t kLockBypassMark = 0x636b7074;  // "ckpt"

class NetLock {
 public:
  NetLock() = default;
  ~NetLock();
  NetLock(const NetLock&) = delete;
  NetLock& operator=(const NetLock&) = delete;

  // Before the tree stops: makes the table and its chains, empty (nothing
  // is dropped yet), in the network namespace netns_fd (-1: ours;
  // duplicated). Registering the chains' hooks waits for an RCU grace
  // period (3-6 ms here): done now, the lock at the stop only adds rules
  // (~0.2 ms). add() and lock_netns() for another table or namespace
  // remove it and start afresh.
  void prepare(int netns_fd, const std::string& table);
  // Host namespace: from now on the packets of c are dropped. The first
  // call creates the table `table` (replacing one of that name).
  void add(const std::string& table, const img::LockedConn& c);
  // Installs the lock described by a dump's image again (same table name;
  // one transaction, so an existing table is replaced without a gap).
  void relock(const img::NetLock& saved);
  // A network namespace of its own (netns_fd, which must stay open until
  // unlock() or keep()): everything but lo dropped, from inside it.
  void lock_netns(int netns_fd, const std::string& table);
  // Whether a dump's image locked a whole network namespace.
  static bool whole_netns(const img::NetLock& saved) { return saved.netns(); }

  // Whether packets are being dropped.
  bool active() const { return locked_; }
  img::NetLock image() const;
  // Packets pass again: the rules go (a fast transaction), the table
  // stays for unlock(), so it costs the stopped tree nothing.
  void lift();
  // Removes the table now (throws on failure; the destructor only logs).
  void unlock();
  // Leaves the table in place (the dump killed the tree: the restore
  // removes it); a table only prepared, that never locked anything, goes.
  void keep();

 private:
  void install(const std::vector<img::LockedConn>& conns);
  // Runs nft commands in the lock's namespace with one context kept from
  // the first: a new one pays its setup again (~1-5 ms, at the stop).
  void run_nft(const std::string& cmds, const std::string& what);
  void set_policies(bool accept);  // of a whole namespace's chains
  // Drops a prepared table unless it is `table` in netns_fd's namespace.
  void forget_other(int netns_fd, const std::string& table);
  std::string table_;
  std::vector<img::LockedConn> conns_;
  int netns_fd_ = -1;   // -1: ours; else netns_own_ or the caller's
  UniqueFd netns_own_;  // prepare()'s duplicate
  std::unique_ptr<NftCtx> nft_;
  UniqueFd nl_;                  // nfnetlink, in the lock's namespace
  bool prepared_whole_ = false;  // prepare() made a whole namespace's chains
  bool table_made_ = false;      // the table exists: the destructor removes it
  bool locked_ = false;          // its rules drop packets
  bool whole_ns_ = false;        // lock_netns: the whole namespace
};

// "ckpt_lock_<pid>": the table of a tree, by its root pid.
std::string lock_table_name(pid_t root);
// The nft rules (input and output) that drop c's packets, for tests and logs.
std::string lock_rules(const std::string& table, const img::LockedConn& c);
// "tcp 10.0.0.1:80 <-> 10.0.0.2:4242"
std::string describe(const img::LockedConn& c);
// An `nft list ruleset` text without the lock tables (ckpt_lock_*): the
// dump of a locked namespace's firewall must not save the lock with it.
std::string without_lock_tables(const std::string& ruleset);
// Whether an nftables table is one of ckpt's locks (what that leaves out).
bool is_lock_table(int family, const std::string& name);

// netlock.img, if the dump saved one.
bool load_net_lock(const image::ImageSource& src, img::NetLock* out);

}  // namespace ckpt
