#include "launcher/control/metrics.h"

#include <boost/asio.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace kindling::control {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

constexpr size_t kMaxRequest = 8192;

struct Family {
  const char* name;
  const char* type;
  const char* help;
};

void Header(std::string& out, const Family& f) {
  absl::StrAppend(&out, "# HELP ", f.name, " ", f.help, "\n# TYPE ", f.name, " ", f.type, "\n");
}

bool IsDeviceCounter(const std::string& k) { return absl::StartsWith(k, "virtio."); }

std::string Label(const VmMetrics& vm) { return absl::StrCat("vm_id=\"", vm.vm_id, "\""); }

void ExitsByReason(std::string& out, const std::vector<VmMetrics>& vms) {
  Header(out, {"kindling_vm_exits_by_reason_total", "counter",
               "KVM exits handled, by reason (KVM binary statistics *_exits)."});
  for (const VmMetrics& vm : vms) {
    for (const auto& [k, v] : vm.kvm) {
      if (k == "exits" || !absl::EndsWith(k, "_exits")) continue;
      absl::StrAppend(&out, "kindling_vm_exits_by_reason_total{", Label(vm), ",reason=\"",
                      k.substr(0, k.size() - 6), "\"} ", v, "\n");
    }
  }
}

void KvmStats(std::string& out, const std::vector<VmMetrics>& vms) {
  Header(out, {"kindling_vm_kvm_stat", "untyped",
               "Every other KVM binary statistic of the VM's vCPUs, summed."});
  for (const VmMetrics& vm : vms) {
    for (const auto& [k, v] : vm.kvm) {
      if (k == "exits" || absl::EndsWith(k, "_exits") || IsDeviceCounter(k)) continue;
      absl::StrAppend(&out, "kindling_vm_kvm_stat{", Label(vm), ",stat=\"", k, "\"} ", v, "\n");
    }
  }
}

// "virtio.blk0.read_bytes" -> device blk0, counter read_bytes.
void DeviceCounters(std::string& out, const std::vector<VmMetrics>& vms) {
  Header(out, {"kindling_vm_device_total", "counter",
               "What each virtio device has done (bytes, frames, requests, errors)."});
  for (const VmMetrics& vm : vms) {
    for (const auto& [k, v] : vm.kvm) {
      if (!IsDeviceCounter(k)) continue;
      size_t dot = k.find('.', 7);
      if (dot == std::string::npos) continue;
      absl::StrAppend(&out, "kindling_vm_device_total{", Label(vm), ",device=\"",
                      k.substr(7, dot - 7), "\",counter=\"", k.substr(dot + 1), "\"} ", v, "\n");
    }
  }
}

}  // namespace

std::string RenderPrometheus(const std::vector<VmMetrics>& vms) {
  std::string out;
  Header(out, {"kindling_vm_info", "gauge", "One per VM the daemon knows, with its state."});
  for (const VmMetrics& vm : vms) {
    absl::StrAppend(&out, "kindling_vm_info{", Label(vm), ",state=\"", vm.state, "\"} 1\n");
  }
  Header(out, {"kindling_vm_exits_total", "counter", "KVM exits handled, all reasons."});
  for (const VmMetrics& vm : vms) {
    if (auto it = vm.kvm.find("exits"); it != vm.kvm.end()) {
      absl::StrAppend(&out, "kindling_vm_exits_total{", Label(vm), "} ", it->second, "\n");
    }
  }
  ExitsByReason(out, vms);
  KvmStats(out, vms);
  DeviceCounters(out, vms);
  Header(out, {"kindling_vm_cpu_seconds_total", "counter",
               "CPU time of the VM process (vCPUs, devices, VMM), user + system."});
  for (const VmMetrics& vm : vms) {
    if (vm.has_process) {
      absl::StrAppend(&out, "kindling_vm_cpu_seconds_total{", Label(vm), "} ", vm.cpu_seconds, "\n");
    }
  }
  Header(out, {"kindling_vm_resident_memory_bytes", "gauge",
               "Resident memory of the VM process, guest RAM the guest touched included."});
  for (const VmMetrics& vm : vms) {
    if (vm.has_process) {
      absl::StrAppend(&out, "kindling_vm_resident_memory_bytes{", Label(vm), "} ", vm.rss_bytes, "\n");
    }
  }
  return out;
}

struct MetricsServer::Impl {
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::function<std::vector<VmMetrics>()> collect;
  std::thread thread;

  void Serve() {
    for (;;) {
      boost::system::error_code ec;
      tcp::socket s(io);
      acceptor.accept(s, ec);
      if (ec) {
        if (ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor) return;
        continue;
      }
      Answer(s);
    }
  }

  void Answer(tcp::socket& s) {
    std::string request;
    boost::system::error_code ec;
    asio::read_until(s, asio::dynamic_buffer(request, kMaxRequest), "\r\n\r\n", ec);
    std::string status = "404 Not Found", type = "text/plain", body = "not found\n";
    if (ec) {
      status = "400 Bad Request";
      body = "bad request\n";
    } else if (absl::StartsWith(request, "GET /metrics ") || absl::StartsWith(request, "GET /metrics?")) {
      status = "200 OK";
      type = "text/plain; version=0.0.4; charset=utf-8";
      body = RenderPrometheus(collect());
    }
    std::string reply = absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type,
                                     "\r\nContent-Length: ", body.size(),
                                     "\r\nConnection: close\r\n\r\n", body);
    asio::write(s, asio::buffer(reply), ec);
  }
};

MetricsServer::MetricsServer() : impl_(std::make_unique<Impl>()) {}

MetricsServer::~MetricsServer() {
  if (impl_->thread.joinable()) {
    boost::system::error_code ec;
    impl_->acceptor.close(ec);
    impl_->thread.detach();  // blocked in accept on some kernels; the process is ending
  }
}

absl::Status MetricsServer::Start(const std::string& host_port,
                                  std::function<std::vector<VmMetrics>()> collect) {
  size_t colon = host_port.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(host_port.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-listen '", host_port, "': expected HOST:PORT"));
  }
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host_port.substr(0, colon), ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-listen '", host_port, "': ", ec.message()));
  }
  tcp::endpoint ep(addr, static_cast<uint16_t>(port));
  impl_->acceptor.open(ep.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(ep, ec);
  if (!ec) impl_->acceptor.listen(16, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("--metrics-listen ", host_port, ": ", ec.message()));
  }
  impl_->collect = std::move(collect);
  impl_->thread = std::thread([impl = impl_.get()] { impl->Serve(); });
  return absl::OkStatus();
}

int MetricsServer::port() const { return impl_->acceptor.local_endpoint().port(); }

}  // namespace kindling::control
