// Prometheus text exposition for `kindling serve --metrics-listen
// HOST:PORT`: per VM its state, KVM exits by reason, vCPU/VMM CPU time,
// memory, and the other KVM binary statistics.
//
//   MetricsServer server;
//   RETURN_IF_ERROR(server.Start("127.0.0.1:9464", [&] { return CollectAll(); }));
#ifndef KINDLING_LAUNCHER_CONTROL_METRICS_H_
#define KINDLING_LAUNCHER_CONTROL_METRICS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"

namespace kindling::control {

struct VmMetrics {
  std::string vm_id;
  std::string state;                         // "running", "stopped", ...
  // KVM binary stats, summed over vCPUs, and the virtio devices' counters
  // ("virtio.blk0.read_bytes"): what GetMetrics returns.
  std::map<std::string, uint64_t> kvm;
  uint64_t rss_bytes = 0;                    // the VM process's resident memory
  double cpu_seconds = 0;                    // the VM process's user + system time
  bool has_process = false;
};

// The text format (version 0.0.4), one family per metric name.
std::string RenderPrometheus(const std::vector<VmMetrics>& vms);

// A minimal HTTP/1.1 server: GET /metrics answers with `collect()`
// rendered; anything else is 404. One request per connection.
class MetricsServer {
 public:
  MetricsServer();
  ~MetricsServer();
  absl::Status Start(const std::string& host_port,
                     std::function<std::vector<VmMetrics>()> collect);
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kindling::control

#endif  // KINDLING_LAUNCHER_CONTROL_METRICS_H_
