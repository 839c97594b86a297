#include "launcher/control/metrics.h"

#include <catch2/catch.hpp>

using kindling::control::RenderPrometheus;
using kindling::control::VmMetrics;

TEST_CASE("each VM's exits go to their reason and the rest to kvm_stat") {
  VmMetrics a;
  a.vm_id = "web-1";
  a.state = "running";
  a.kvm = {{"exits", 10}, {"io_exits", 7}, {"halt_exits", 3}, {"irq_injections", 5},
           {"virtio.blk0.read_bytes", 4096}, {"virtio.net1.tx_frames", 2}};
  a.has_process = true;
  a.rss_bytes = 4096;
  a.cpu_seconds = 0.25;
  VmMetrics b;
  b.vm_id = "gone";
  b.state = "failed";
  std::string text = RenderPrometheus({a, b});
  CHECK(text.find("kindling_vm_info{vm_id=\"web-1\",state=\"running\"} 1\n") != std::string::npos);
  CHECK(text.find("kindling_vm_info{vm_id=\"gone\",state=\"failed\"} 1\n") != std::string::npos);
  CHECK(text.find("kindling_vm_exits_total{vm_id=\"web-1\"} 10\n") != std::string::npos);
  CHECK(text.find("kindling_vm_exits_by_reason_total{vm_id=\"web-1\",reason=\"io\"} 7\n") !=
        std::string::npos);
  CHECK(text.find("kindling_vm_kvm_stat{vm_id=\"web-1\",stat=\"irq_injections\"} 5\n") !=
        std::string::npos);
  CHECK(text.find("stat=\"io_exits\"") == std::string::npos);
  CHECK(text.find("kindling_vm_device_total{vm_id=\"web-1\",device=\"blk0\",counter=\"read_bytes\"} "
                  "4096\n") != std::string::npos);
  CHECK(text.find("kindling_vm_device_total{vm_id=\"web-1\",device=\"net1\",counter=\"tx_frames\"} "
                  "2\n") != std::string::npos);
  CHECK(text.find("stat=\"virtio.") == std::string::npos);
  CHECK(text.find("kindling_vm_cpu_seconds_total{vm_id=\"web-1\"} 0.25\n") != std::string::npos);
  CHECK(text.find("kindling_vm_resident_memory_bytes{vm_id=\"gone\"}") == std::string::npos);
  // One HELP and TYPE per family, before its samples.
  CHECK(text.find("# TYPE kindling_vm_exits_total counter\n") <
        text.find("kindling_vm_exits_total{"));
}
