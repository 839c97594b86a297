#include "launcher/control/config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kindling/status_macros.h"
#include "vcpu/cpu_template.h"

namespace kindling::control {
namespace {

absl::Status Range(const std::string& field, uint64_t v, uint64_t lo, uint64_t hi) {
  if (v < lo) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", v, " is below the minimum of ", lo));
  }
  if (v > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", v, " is above the maximum of ", hi));
  }
  return absl::OkStatus();
}

absl::Status Required(const std::string& field, int value, const std::string& names) {
  if (value != 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": unspecified; say ", names));
}

absl::Status ValidateDevices(const v1::VmConfig& c) {
  if (c.disks_size() > kMaxDisks || c.nets_size() > kMaxNets) {
    return absl::InvalidArgumentError(absl::StrCat(
        c.disks_size() > kMaxDisks ? "config.disks: " : "config.nets: ",
        std::max(c.disks_size(), c.nets_size()), " devices, at most ",
        c.disks_size() > kMaxDisks ? kMaxDisks : kMaxNets));
  }
  for (int i = 0; i < c.disks_size(); ++i) {
    const v1::Disk& d = c.disks(i);
    std::string f = absl::StrCat("config.disks[", i, "]");
    if (d.path().empty()) return absl::InvalidArgumentError(f + ".path: required");
    if (d.path().find(',') != std::string::npos) {
      return absl::InvalidArgumentError(f + ".path: a ',' is not supported in a path");
    }
    if (!d.format().empty() && d.format() != "raw" && d.format() != "qcow2") {
      return absl::InvalidArgumentError(
          absl::StrCat(f, ".format: '", d.format(), "'; expected raw or qcow2"));
    }
  }
  for (int i = 0; i < c.nets_size(); ++i) {
    std::string f = absl::StrCat("config.nets[", i, "].tap");
    const std::string& tap = c.nets(i).tap();
    if (tap.empty() || tap.size() > 15 || tap.find_first_of(",=") != std::string::npos) {
      return absl::InvalidArgumentError(f + ": 1 to 15 bytes without ',' or '='");
    }
  }
  if (c.has_vsock()) {
    RETURN_IF_ERROR(Range("config.vsock.cid", c.vsock().cid(), 3, 0xfffffffeULL));
    if (c.vsock().uds_path().empty() == !c.vsock().vhost()) {
      return absl::InvalidArgumentError("config.vsock: exactly one of uds_path and vhost");
    }
  }
  if (c.has_balloon()) {
    RETURN_IF_ERROR(
        Range("config.balloon.amount_mib", c.balloon().amount_mib(), 0, c.memory_mib()));
    RETURN_IF_ERROR(
        Range("config.balloon.stats_interval_s", c.balloon().stats_interval_s(), 0, 3600));
  }
  if (c.has_gpu()) {
    const v1::Gpu& g = c.gpu();
    RETURN_IF_ERROR(Range("config.gpu.width", g.width(), 0, 16384));
    RETURN_IF_ERROR(Range("config.gpu.height", g.height(), 0, 16384));
    RETURN_IF_ERROR(Range("config.gpu.max_mib", g.max_mib(), 0, 4096));
  }
  return absl::OkStatus();
}

std::string OnOff(bool b) { return b ? "on" : "off"; }

void AddPvFlags(const v1::VmConfig& c, std::vector<std::string>& f) {
  const std::pair<const char*, bool> pv[] = {
      {"--pv-eoi", !c.has_pv_eoi() || c.pv_eoi()},
      {"--kvmclock", !c.has_kvmclock() || c.kvmclock()},
      {"--steal-time", !c.has_steal_time() || c.steal_time()},
      {"--pv-unhalt", !c.has_pv_unhalt() || c.pv_unhalt()},
      {"--pv-tlb-flush", !c.has_pv_tlb_flush() || c.pv_tlb_flush()},
      {"--pv-send-ipi", !c.has_pv_send_ipi() || c.pv_send_ipi()},
  };
  for (const auto& [flag, on] : pv) {
    f.push_back(flag);
    f.push_back(OnOff(on));
  }
}

void AddDeviceFlags(const v1::VmConfig& c, std::vector<std::string>& f) {
  for (const v1::Disk& d : c.disks()) {
    std::string v = d.path();
    if (d.read_only()) v += ",ro";
    if (!d.format().empty()) v += ",format=" + d.format();
    f.insert(f.end(), {"--disk", v});
  }
  for (const v1::Net& n : c.nets()) {
    f.insert(f.end(), {"--net", "tap=" + n.tap() + (n.mac().empty() ? "" : ",mac=" + n.mac())});
  }
  if (c.has_vsock()) {
    f.insert(f.end(), {"--vsock", absl::StrCat("cid=", c.vsock().cid(), ",",
                                               c.vsock().vhost() ? "vhost" : "uds=" + c.vsock().uds_path())});
  }
  if (c.has_balloon()) {
    const v1::Balloon& b = c.balloon();
    f.push_back(absl::StrCat("--balloon=amount_mib=", b.amount_mib(), ",stats_s=",
                             b.stats_interval_s(), ",reporting=", OnOff(b.free_page_reporting()),
                             b.deflate_on_oom() ? ",deflate_on_oom" : ""));
  }
  if (c.rng()) f.push_back("--rng");
  if (c.has_gpu()) {
    const v1::Gpu& g = c.gpu();
    GpuConfig d;  // kindling run's defaults stand for the zeros
    f.insert(f.end(), {"--gpu", absl::StrCat(g.virgl() ? "virgl" : "2d",
                                             ",width=", g.width() ? g.width() : d.width,
                                             ",height=", g.height() ? g.height() : d.height,
                                             ",max_mib=", g.max_mib() ? g.max_mib() : d.max_mib)});
  }
}

}  // namespace

absl::Status ValidateVmId(const std::string& id) {
  if (id.empty() || id.size() > 64 || id[0] == '.') {
    return absl::InvalidArgumentError(
        absl::StrCat("vm_id '", id, "': 1 to 64 characters, not starting with '.'"));
  }
  for (char ch : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '_' &&
        ch != '-') {
      return absl::InvalidArgumentError(absl::StrCat(
          "vm_id '", absl::CHexEscape(id), "': only letters, digits, '.', '_' and '-'"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateVmConfig(const v1::VmConfig& c, uint64_t host_memory_mib,
                              uint32_t host_max_vcpus) {
  if (c.kernel().empty()) return absl::InvalidArgumentError("config.kernel: required");
  RETURN_IF_ERROR(Range("config.vcpus", c.vcpus(), 1, kMaxVcpus));
  RETURN_IF_ERROR(Range("config.memory_mib", c.memory_mib(), kMinMemoryMib, kMaxMemoryMib));
  RETURN_IF_ERROR(Range("config.cmdline length", c.cmdline().size(), 0, kMaxCmdline));
  RETURN_IF_ERROR(Range("config.cpu_template length", c.cpu_template().size(), 0, kMaxCpuTemplate));
  RETURN_IF_ERROR(Required("config.irqchip", c.irqchip(), "IRQCHIP_FULL or IRQCHIP_SPLIT"));
  RETURN_IF_ERROR(Required("config.console", c.console(), "CONSOLE_SERIAL or CONSOLE_VIRTIO"));
  RETURN_IF_ERROR(Required("config.transport", c.transport(), "TRANSPORT_MMIO or TRANSPORT_PCI"));
  RETURN_IF_ERROR(Required("config.virtqueue", c.virtqueue(), "VIRTQUEUE_SPLIT or VIRTQUEUE_PACKED"));
  if (c.hugepages() && c.memory_mib() % 2 != 0) {
    return absl::InvalidArgumentError("config.memory_mib: hugepages need an even number of MiB");
  }
  if (!c.cpu_template().empty()) {
    absl::Status s = vcpu::ParseCpuTemplateJson(c.cpu_template()).status();
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("config.cpu_template: ", s.message()));
  }
  RETURN_IF_ERROR(ValidateDevices(c));
  if (host_memory_mib != 0 && c.memory_mib() > host_memory_mib) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "config.memory_mib: ", c.memory_mib(), " MiB is more than this host's ",
        host_memory_mib, " MiB of RAM"));
  }
  if (host_max_vcpus != 0 && c.vcpus() > host_max_vcpus) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "config.vcpus: ", c.vcpus(), " is more than this host's KVM allows (",
        host_max_vcpus, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ToRunFlags(const v1::VmConfig& c,
                                                    const std::string& template_path) {
  RETURN_IF_ERROR(ValidateVmConfig(c));
  std::vector<std::string> f = {"--kernel", c.kernel(), "--cpus", absl::StrCat(c.vcpus()),
                                "--memory", absl::StrCat(c.memory_mib())};
  if (!c.initrd().empty()) f.insert(f.end(), {"--initrd", c.initrd()});
  if (!c.cmdline().empty()) f.insert(f.end(), {"--cmdline", c.cmdline()});
  if (!c.cpu_template().empty()) f.insert(f.end(), {"--cpu-template", template_path});
  f.insert(f.end(), {"--irqchip", c.irqchip() == v1::IRQCHIP_SPLIT ? "split" : "full"});
  f.insert(f.end(), {"--console", c.console() == v1::CONSOLE_VIRTIO ? "virtio" : "serial"});
  f.insert(f.end(), {"--transport", c.transport() == v1::TRANSPORT_PCI ? "pci" : "mmio"});
  f.insert(f.end(), {"--virtqueue", c.virtqueue() == v1::VIRTQUEUE_PACKED ? "packed" : "split"});
  if (c.hugepages()) f.push_back("--hugepages");
  AddPvFlags(c, f);
  AddDeviceFlags(c, f);
  absl::StatusOr<RunOptions> parsed = ParseRunFlags(f);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("config: ", parsed.status().message()));
  }
  return f;
}

absl::StatusOr<v1::VmConfig> FromRunOptions(const RunOptions& o) {
  const VmConfig& vm = o.vm;
  v1::VmConfig c;
  c.set_kernel(vm.kernel);
  c.set_initrd(vm.initrd);
  c.set_cmdline(vm.cmdline);
  c.set_vcpus(vm.cpus);
  c.set_memory_mib(vm.memory_mib);
  if (!vm.cpu_template.empty()) {
    std::ifstream in(vm.cpu_template);
    if (!in) return absl::NotFoundError(absl::StrCat("--cpu-template ", vm.cpu_template, ": cannot read"));
    std::stringstream text;
    text << in.rdbuf();
    c.set_cpu_template(text.str());
  }
  c.set_pv_eoi(vm.pv.pv_eoi);
  c.set_kvmclock(vm.pv.kvmclock);
  c.set_steal_time(vm.pv.steal_time);
  c.set_pv_unhalt(vm.pv.pv_unhalt);
  c.set_pv_tlb_flush(vm.pv.pv_tlb_flush);
  c.set_pv_send_ipi(vm.pv.pv_send_ipi);
  c.set_irqchip(vm.irqchip == vcpu::IrqchipMode::kSplit ? v1::IRQCHIP_SPLIT : v1::IRQCHIP_FULL);
  c.set_console(vm.virtio.console ? v1::CONSOLE_VIRTIO : v1::CONSOLE_SERIAL);
  c.set_transport(vm.virtio.transport == VirtioTransport::kPci ? v1::TRANSPORT_PCI
                                                                : v1::TRANSPORT_MMIO);
  c.set_virtqueue(vm.virtio.packed ? v1::VIRTQUEUE_PACKED : v1::VIRTQUEUE_SPLIT);
  c.set_hugepages(vm.hugepages);
  for (const DiskConfig& d : vm.virtio.disks) {
    v1::Disk* p = c.add_disks();
    p->set_path(d.path);
    p->set_read_only(d.read_only);
    p->set_format(d.format);
  }
  for (const NetConfig& n : vm.virtio.nets) {
    v1::Net* p = c.add_nets();
    p->set_tap(n.tap);
    if (n.mac) {
      const auto& m = *n.mac;
      p->set_mac(absl::StrFormat("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]));
    }
  }
  if (vm.virtio.vsock) {
    c.mutable_vsock()->set_cid(vm.virtio.vsock->cid);
    c.mutable_vsock()->set_uds_path(vm.virtio.vsock->uds_path);
    c.mutable_vsock()->set_vhost(vm.virtio.vsock->vhost);
  }
  if (vm.virtio.balloon) {
    const BalloonConfig& b = *vm.virtio.balloon;
    c.mutable_balloon()->set_amount_mib(b.amount_mib);
    c.mutable_balloon()->set_deflate_on_oom(b.deflate_on_oom);
    c.mutable_balloon()->set_stats_interval_s(b.stats_interval_s);
    c.mutable_balloon()->set_free_page_reporting(b.free_page_reporting);
  }
  c.set_rng(vm.virtio.rng);
  if (vm.virtio.gpu) {
    c.mutable_gpu()->set_width(vm.virtio.gpu->width);
    c.mutable_gpu()->set_height(vm.virtio.gpu->height);
    c.mutable_gpu()->set_max_mib(vm.virtio.gpu->max_mib);
    c.mutable_gpu()->set_virgl(vm.virtio.gpu->virgl);
  }
  return c;
}

}  // namespace kindling::control
