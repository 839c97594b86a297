// A CPU pool's membership on etcd, through etcd's v3 gRPC API (KV and Lease,
// generated from the .proto files Debian ships: //third_party/etcd).
//
// Each host publishes its CPU profile (JSON) under
//   /kindling/pools/<pool>/hosts/<host>
// attached to a lease it keeps alive; a host that dies stops renewing, its
// lease expires and its key goes with it. `kindling serve --pool` and
// `kindling pool-join` join; `kindling cpu-baseline --etcd` reads Members().
//
//   ASSIGN_OR_RETURN(auto pool, EtcdPool::Connect("127.0.0.1:2379", "prod"));
//   RETURN_IF_ERROR(pool->Join("host-a", profile_json, absl::Seconds(10)));
//   ASSIGN_OR_RETURN(std::vector<EtcdPool::Member> m, pool->Members());
#ifndef LAUNCHER_CONTROL_ETCD_POOL_H_
#define LAUNCHER_CONTROL_ETCD_POOL_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace grpc {
class Channel;
}

namespace kindling::control {

class EtcdPool {
 public:
  struct Member {
    std::string host;
    std::string profile_json;
  };
  static constexpr size_t kMaxMembers = 1024;
  static constexpr size_t kMaxProfileBytes = 4 << 20;

  // `endpoints`: etcd client URLs, comma separated ("127.0.0.1:2379",
  // "http://10.0.0.1:2379,http://10.0.0.2:2379"). Pool names are 1-64 of
  // [A-Za-z0-9._-]. Fails if no endpoint answers within `timeout`.
  static absl::StatusOr<std::unique_ptr<EtcdPool>> Connect(
      const std::string& endpoints, const std::string& pool,
      absl::Duration timeout = absl::Seconds(5));
  // Leaves the pool (revokes the lease) if joined.
  ~EtcdPool();

  // Publishes `profile_json` as `host` under a lease of `ttl` (at least 2 s)
  // and keeps it alive from a thread; a lease found expired is re-granted
  // and the key put again.
  absl::Status Join(const std::string& host, const std::string& profile_json,
                    absl::Duration ttl);
  // Stops the keep-alive and revokes the lease: the key goes at once.
  absl::Status Leave();
  // Stops the keep-alive without revoking: what a host that dies does.
  void Abandon();

  // Every member's profile, by host name.
  absl::StatusOr<std::vector<Member>> Members() const;

  static std::string Prefix(const std::string& pool);
  static absl::Status ValidateName(const std::string& what, const std::string& name);

 private:
  EtcdPool(std::shared_ptr<grpc::Channel> channel, std::string pool, absl::Duration timeout);
  absl::StatusOr<int64_t> GrantAndPut();
  void KeepAlive();
  bool RenewOnce(int64_t lease);
  void StopKeepAlive();

  std::shared_ptr<grpc::Channel> channel_;
  std::string pool_;
  absl::Duration timeout_;
  std::string host_, profile_json_;
  absl::Duration ttl_;
  mutable absl::Mutex mu_;
  int64_t lease_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread keeper_;
};

}  // namespace kindling::control

#endif  // LAUNCHER_CONTROL_ETCD_POOL_H_
