// The network of a `ckpt run` container (--net none|host|bridge=BR,...):
// a veth pair whose host end joins a bridge of the host and whose other end
// is the container's eth0. Written on libnl-route-3. Usable at restore
// too: the restored container gets a new pair with the saved names and MAC.
//
// Call order (bridge mode), with netns_fd an open /proc/PID/ns/net of the
// container:
//   attach_veth_host_end(net, netns_fd);   // pair made, host end on the bridge
//   configure_container_net(net, netns_fd); // lo, eth0 up, address, gateway
// and when the container is gone: remove_host_veth(net.host_ifname()).
#pragma once

#include <string>

#include "container.pb.h"

namespace ckpt::container {

// Parses --net: "none", "host" or "bridge=BR,ip=A.B.C.D/N[,gw=G]". Throws
// UsageError naming what is wrong.
img::ContainerNet parse_net(const std::string& arg);
// "ck-NAME", or for a name too long for an interface name (15 bytes)
// "ck-" + its first 4 characters + "-" + 7 hex digits of a hash of it.
std::string host_ifname_for(const std::string& name);

// Creates the veth pair in the calling thread's network namespace: the host
// end net.host_ifname() (required) joins bridge net.bridge() and is set up;
// the other end is created directly inside the namespace netns_fd as
// net.container_ifname() (default "eth0", written back into net), with MAC
// net.mac() if set; the MAC it got is written back into net. On failure
// nothing is left. Throws Error naming the link and the bridge.
void attach_veth_host_end(img::ContainerNet* net, int netns_fd);

// Inside the namespace netns_fd: lo up, the container end up with
// net.ip() and, if net.gw() is set, a default route through it.
void configure_container_net(const img::ContainerNet& net, int netns_fd);

// Deletes the link host_ifname of the calling thread's network namespace
// (the peer goes with it). Returns false if there is no such link.
bool remove_host_veth(const std::string& host_ifname);
// The link exists in the calling thread's network namespace.
bool link_exists(const std::string& ifname);

}  // namespace ckpt::container
