#include "launcher/cli.h"

#include <charconv>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "migration/address.h"

namespace kindling {
namespace {

absl::StatusOr<uint64_t> ParseUint(const std::string& flag,
                                   const std::string& value, uint64_t max) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " '", value, "': expected a whole number"));
  }
  if (v > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", value, ": at most ", max));
  }
  return v;
}

absl::StatusOr<bool> ParseOnOff(const std::string& flag, const std::string& value) {
  if (value == "on") return true;
  if (value == "off") return false;
  return absl::InvalidArgumentError(
      absl::StrCat(flag, " '", value, "': expected on or off"));
}

absl::StatusOr<DiskConfig> ParseDisk(const std::string& value) {
  std::vector<std::string> parts = absl::StrSplit(value, ',');
  DiskConfig d;
  d.path = parts[0];
  if (d.path.empty()) return absl::InvalidArgumentError("--disk needs a path");
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p == "ro" || p == "readonly" || p == "ro=on") {
      d.read_only = true;
    } else if (p.rfind("format=", 0) == 0) {
      d.format = p.substr(7);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--disk ", value, ": unknown option '", p, "' (expected ro or format=FMT)"));
    }
  }
  return d;
}

absl::StatusOr<std::array<uint8_t, 6>> ParseMac(const std::string& flag, const std::string& v) {
  std::vector<std::string> parts = absl::StrSplit(v, ':');
  std::array<uint8_t, 6> mac;
  bool ok = parts.size() == 6;
  for (size_t i = 0; ok && i < 6; ++i) {
    unsigned byte = 0;
    auto [end, ec] = std::from_chars(parts[i].data(), parts[i].data() + parts[i].size(), byte, 16);
    ok = parts[i].size() == 2 && ec == std::errc() && end == parts[i].data() + 2;
    mac[i] = static_cast<uint8_t>(byte);
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " mac=", v, ": expected six hex bytes like 52:54:00:12:34:56"));
  }
  if (mac[0] & 1) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " mac=", v, ": a multicast address"));
  }
  return mac;
}

// "k=v,k2,..." into pairs (a bare word has an empty value).
std::vector<std::pair<std::string, std::string>> KeyValues(const std::string& v) {
  std::vector<std::pair<std::string, std::string>> out;
  if (v.empty()) return out;
  for (absl::string_view part : absl::StrSplit(v, ',')) {
    std::pair<std::string, std::string> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    out.push_back(kv);
  }
  return out;
}

absl::StatusOr<NetConfig> ParseNet(const std::string& v) {
  NetConfig n;
  for (const auto& [k, val] : KeyValues(v)) {
    if (k == "tap") {
      n.tap = val;
    } else if (k == "mac") {
      auto mac = ParseMac("--net", val);
      if (!mac.ok()) return mac.status();
      n.mac = *mac;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--net ", v, ": unknown option '", k, "' (expected tap=NAME, mac=MAC)"));
    }
  }
  if (n.tap.empty()) return absl::InvalidArgumentError("--net needs tap=NAME");
  return n;
}

absl::StatusOr<VsockConfig> ParseVsock(const std::string& v) {
  VsockConfig c;
  bool have_cid = false;
  for (const auto& [k, val] : KeyValues(v)) {
    if (k == "cid") {
      auto n = ParseUint("--vsock cid", val, 0xffffffffULL);
      if (!n.ok()) return n.status();
      c.cid = *n;
      have_cid = true;
    } else if (k == "uds" || k == "uds_path") {
      c.uds_path = val;
    } else if (k == "vhost" && (val.empty() || val == "on")) {
      c.vhost = true;
    } else if (k == "vhost" && val == "off") {
      c.vhost = false;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--vsock ", v, ": unknown option '", k, "' (expected cid=N, uds=PATH or vhost)"));
    }
  }
  if (!have_cid || (c.uds_path.empty() == !c.vhost)) {
    return absl::InvalidArgumentError(
        "--vsock needs cid=N and one host side: uds=PATH or vhost");
  }
  return c;
}

absl::StatusOr<BalloonConfig> ParseBalloon(const std::string& v) {
  BalloonConfig b;
  for (const auto& [k, val] : KeyValues(v)) {
    if (k == "amount_mib") {
      auto n = ParseUint("--balloon amount_mib", val, 1ULL << 30);
      if (!n.ok()) return n.status();
      b.amount_mib = *n;
    } else if (k == "deflate_on_oom") {
      b.deflate_on_oom = true;
    } else if (k == "stats_s") {
      auto n = ParseUint("--balloon stats_s", val, 3600);
      if (!n.ok()) return n.status();
      b.stats_interval_s = static_cast<uint32_t>(*n);
    } else if (k == "reporting") {
      auto on = ParseOnOff("--balloon reporting", val);
      if (!on.ok()) return on.status();
      b.free_page_reporting = *on;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--balloon ", v, ": unknown option '", k,
          "' (expected amount_mib=N, deflate_on_oom, stats_s=N, reporting=on|off)"));
    }
  }
  return b;
}

absl::StatusOr<GpuConfig> ParseGpu(const std::string& v) {
  GpuConfig g;
  bool mode = false;
  for (const auto& [k, val] : KeyValues(v)) {
    if (k == "2d" && val.empty()) {
      mode = true;
    } else if (k == "virgl" && val.empty()) {
      mode = true;
      g.virgl = true;
    } else if (k == "width" || k == "height") {
      auto n = ParseUint(absl::StrCat("--gpu ", k), val, 16384);
      if (!n.ok()) return n.status();
      (k == "width" ? g.width : g.height) = static_cast<uint32_t>(*n);
    } else if (k == "max_mib") {
      auto n = ParseUint("--gpu max_mib", val, 4096);
      if (!n.ok()) return n.status();
      g.max_mib = *n;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--gpu ", v, ": unknown option '", k,
          "' (expected 2d or virgl, width=W, height=H, max_mib=N)"));
    }
  }
  if (!mode) {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpu ", v,
                     ": say the mode: 2d or virgl (e.g. --gpu 2d,width=1024,height=768)"));
  }
  return g;
}

}  // namespace

std::string RunUsage() {
  return R"(usage: kindling run --kernel PATH [options]

Boots a microVM, streams its serial console to stdout (stdin goes to the
guest), and exits with the guest's status.

  --kernel PATH          ELF vmlinux, PVH ELF or bzImage (required)
  --initrd PATH          initial ramdisk
  --cmdline STR          kernel command line (default: console=ttyS0 reboot=k panic=1 pci=off)
  --cpus N               vCPUs, 1-254 (default 1)
  --memory MIB           guest RAM in MiB (default 128)
  --cpu-template FILE    Firecracker-format custom CPU template (JSON); a CPU
                         pool's baseline comes from kindling cpu-baseline
  --host-cpu-template FILE  narrow what this host offers guests (KVM's
                         supported CPUID) by a CPU template's CPUID modifiers:
                         the base of new guests and what an incoming
                         migration or restore is checked against (a host of
                         a pool kept within it, or a test standing in for a
                         host of another CPU); allowed with --restore and
                         --incoming
  --pv-eoi on|off        paravirtual end-of-interrupt (default on)
  --kvmclock on|off      --steal-time on|off   --pv-unhalt on|off
  --pv-tlb-flush on|off  --pv-send-ipi on|off  (all default on)
  --irqchip split|full   LAPIC in KVM and the IOAPIC in kindling (default split),
                         or LAPIC+IOAPIC+PIC+PIT all in KVM
  --boot-protocol pvh|linux  entry for an ELF with a PVH note (default pvh)
  --hugepages            back guest RAM with 2 MiB hugepages
  --stats                print KVM exit statistics to stderr when the VM stops
  --disk PATH[,ro][,format=raw|qcow2]
                         a virtio-blk disk (repeatable; raw unless format= says)
  --net tap=NAME[,mac=MAC]
                         a virtio-net device on a TAP (repeatable)
  --vsock cid=N,uds=PATH a virtio-vsock device; the host side is Unix sockets
                         (Firecracker's convention: connect to PATH and send
                         "CONNECT <port>\n"; guest connections to port P go
                         to PATH_P)
  --vsock cid=N,vhost    the same device on the kernel's vhost-vsock
                         (/dev/vhost-vsock): the host uses AF_VSOCK sockets
  --balloon [amount_mib=N][,deflate_on_oom][,stats_s=N][,reporting=on|off]
                         a virtio-balloon device with an initial target
  --rng                  a virtio-rng device (host getrandom)
  --gpu 2d|virgl[,width=W][,height=H][,max_mib=N]
                         a virtio-gpu device (headless) whose scanout is
                         W x H (default 1280x800); its resources may take N
                         MiB of host memory (default 256); see it with
                         kindling screenshot. virgl adds 3D (virglrenderer
                         in kindling-gpu; llvmpipe without a GPU); such a
                         VM cannot be snapshotted or migrated yet
  --virtqueue split|packed  packed also offers packed virtqueues (virtio 1.2
                         2.8) to the drivers (default split only)
  --transport mmio|pci   how virtio devices attach (default mmio); pci puts
                         them on a PCI bus (modern virtio-pci, MSI-X) and
                         drops pci=off from the default cmdline
  --restore DIR          resume the VM saved in DIR (kindling snapshot) instead
                         of booting: the snapshot gives vCPUs, memory and
                         irqchip, so only --stats, --hugepages and
                         --restore-mode may be given with it
  --restore-mode eager|lazy|uffd  how guest RAM is loaded: eager (default)
                         reads the memory file, checking each chunk's CRC-32,
                         before the vCPUs start; lazy maps it privately, so
                         pages load on first touch and VMs restored from one
                         snapshot share its page cache; uffd fills fresh RAM
                         page by page on first touch through userfaultfd
  --incoming ADDR        wait on ADDR (unix:PATH or tcp:HOST:PORT) for a live
                         migration (kindling migrate ... --to ADDR) and run
                         the VM it brings; like --restore, only --stats and
                         --hugepages may be given with it
  --console serial|virtio  where stdin/stdout go: ttyS0 (default) or a
                         virtio console (hvc0; the default cmdline then says
                         console=hvc0)
Virtio devices are virtio-mmio (version 2), announced on the kernel command
line (virtio_mmio.device=) and in the ACPI DSDT (LNRO0005).

Exit status: the byte the guest wrote to the debug-exit port 0xf4; 0 after a
clean guest shutdown or reboot; 125 if kindling could not start the VM;
126 if the guest crashed (triple fault, emulation failure); 128+N after
signal N (SIGINT, SIGTERM).
)";
}

// With --restore or --incoming the machine comes from the saved state:
// flags that shape a new one would be silently ignored, so they are refused.
absl::Status CheckRestoreFlags(const std::vector<std::string>& given, const char* mode) {
  bool restore = std::string_view(mode) == "--restore";
  for (const std::string& f : given) {
    bool allowed = f == mode || (restore && f == "--restore-mode") || f == "--stats" ||
                   f == "--host-cpu-template" ||
                   f == "--hugepages" || f == "--help" || f == "-h";
    if (!allowed) {
      return absl::InvalidArgumentError(absl::StrCat(
          f, " cannot be given with ", mode, " (the saved state holds the machine)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RunOptions> ParseRunFlags(const std::vector<std::string>& args) {
  RunOptions o;
  bool cmdline_given = false;
  std::vector<std::string> given;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::string value;
    bool has_value = false;
    if (auto eq = flag.find('='); eq != std::string::npos && flag.rfind("--", 0) == 0) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      has_value = true;
    }
    auto need_value = [&]() -> absl::StatusOr<std::string> {
      if (has_value) return value;
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat(flag, " needs a value"));
      }
      return args[++i];
    };
    auto set_pv = [&](bool vcpu::PvFeatures::*field) -> absl::Status {
      auto v = need_value();
      if (!v.ok()) return v.status();
      auto b = ParseOnOff(flag, *v);
      if (!b.ok()) return b.status();
      o.vm.pv.*field = *b;
      return absl::OkStatus();
    };
    absl::Status s = absl::OkStatus();
    given.push_back(flag);
    if (flag == "--help" || flag == "-h") {
      o.help = true;
    } else if (flag == "--restore") {
      auto v = need_value();
      if (!v.ok()) return v.status();
      o.restore_dir = *v;
    } else if (flag == "--incoming") {
      auto v = need_value();
      if (!v.ok()) return v.status();
      if (auto a = ::migration::ParseStreamAddress(*v); !a.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("--incoming: ", a.status().message()));
      }
      o.incoming = *v;
    } else if (flag == "--restore-mode") {
      auto v = need_value();
      if (!v.ok()) return v.status();
      absl::StatusOr<::migration::RestoreMode> mode = ::migration::ParseRestoreMode(*v);
      if (!mode.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--restore-mode: ", mode.status().message()));
      }
      o.restore_mode = *mode;
    } else if (flag == "--stats") {
      o.print_stats = true;
      o.vm.collect_stats = true;
    } else if (flag == "--hugepages") {
      o.vm.hugepages = true;
    } else if (flag == "--rng") {
      o.vm.virtio.rng = true;
    } else if (flag == "--net" || flag == "--vsock") {
      auto v = need_value();
      if (!v.ok()) return v.status();
      if (flag == "--net") {
        auto n = ParseNet(*v);
        if (!n.ok()) return n.status();
        o.vm.virtio.nets.push_back(*n);
      } else {
        auto c = ParseVsock(*v);
        if (!c.ok()) return c.status();
        o.vm.virtio.vsock = *c;
      }
    } else if (flag == "--gpu") {
      auto v = need_value();
      if (!v.ok()) return v.status();
      auto g = ParseGpu(*v);
      if (!g.ok()) return g.status();
      o.vm.virtio.gpu = *g;
    } else if (flag == "--balloon") {
      // The value is optional: `--balloon` alone, or `--balloon=...` /
      // `--balloon amount_mib=...` when the next word is not a flag.
      std::string v;
      if (has_value) {
        v = value;
      } else if (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) {
        v = args[++i];
      }
      auto b = ParseBalloon(v);
      if (!b.ok()) return b.status();
      o.vm.virtio.balloon = *b;
    } else if (flag == "--disk") {
      auto v = need_value();
      if (!v.ok()) return v.status();
      auto d = ParseDisk(*v);
      if (!d.ok()) return d.status();
      o.vm.virtio.disks.push_back(*d);
    } else if (flag == "--transport") {
      auto v = need_value();
      if (!v.ok()) return v.status();
      if (*v != "mmio" && *v != "pci") {
        return absl::InvalidArgumentError(
            absl::StrCat("--transport '", *v, "': expected mmio or pci"));
      }
      o.vm.virtio.transport = *v == "pci" ? VirtioTransport::kPci : VirtioTransport::kMmio;
    } else if (flag == "--virtqueue") {
      auto v = need_value();
      if (!v.ok()) return v.status();
      if (*v != "split" && *v != "packed") {
        return absl::InvalidArgumentError(
            absl::StrCat("--virtqueue '", *v, "': expected split or packed"));
      }
      o.vm.virtio.packed = *v == "packed";
    } else if (flag == "--console") {
      auto v = need_value();
      if (!v.ok()) return v.status();
      if (*v != "serial" && *v != "virtio") {
        return absl::InvalidArgumentError(
            absl::StrCat("--console '", *v, "': expected serial or virtio"));
      }
      o.vm.virtio.console = *v == "virtio";
    } else if (flag == "--kernel" || flag == "--initrd" || flag == "--cmdline" ||
               flag == "--cpu-template" || flag == "--host-cpu-template") {
      auto v = need_value();
      if (!v.ok()) return v.status();
      if (flag == "--kernel") o.vm.kernel = *v;
      if (flag == "--initrd") o.vm.initrd = *v;
      if (flag == "--cmdline") {
        o.vm.cmdline = *v;
        cmdline_given = true;
      }
      if (flag == "--cpu-template") o.vm.cpu_template = *v;
      if (flag == "--host-cpu-template") o.vm.host_cpu_template = *v;
    } else if (flag == "--cpus") {
      auto v = need_value();
      if (!v.ok()) return v.status();
      auto n = ParseUint(flag, *v, 1024);
      if (!n.ok()) return n.status();
      o.vm.cpus = *n;
    } else if (flag == "--memory") {
      auto v = need_value();
      if (!v.ok()) return v.status();
      auto n = ParseUint(flag, *v, 1ULL << 30);
      if (!n.ok()) return n.status();
      o.vm.memory_mib = *n;
    } else if (flag == "--irqchip") {
      auto v = need_value();
      if (!v.ok()) return v.status();
      if (*v == "full") {
        o.vm.irqchip = vcpu::IrqchipMode::kFull;
      } else if (*v == "split") {
        o.vm.irqchip = vcpu::IrqchipMode::kSplit;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("--irqchip '", *v, "': expected full or split"));
      }
    } else if (flag == "--boot-protocol") {
      auto v = need_value();
      if (!v.ok()) return v.status();
      if (*v == "pvh") {
        o.vm.elf_entry = vcpu::boot::ElfEntry::kPreferPvh;
      } else if (*v == "linux") {
        o.vm.elf_entry = vcpu::boot::ElfEntry::kLinux64;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("--boot-protocol '", *v, "': expected pvh or linux"));
      }
    } else if (flag == "--pv-eoi") {
      s = set_pv(&vcpu::PvFeatures::pv_eoi);
    } else if (flag == "--kvmclock") {
      s = set_pv(&vcpu::PvFeatures::kvmclock);
    } else if (flag == "--steal-time") {
      s = set_pv(&vcpu::PvFeatures::steal_time);
    } else if (flag == "--pv-unhalt") {
      s = set_pv(&vcpu::PvFeatures::pv_unhalt);
    } else if (flag == "--pv-tlb-flush") {
      s = set_pv(&vcpu::PvFeatures::pv_tlb_flush);
    } else if (flag == "--pv-send-ipi") {
      s = set_pv(&vcpu::PvFeatures::pv_send_ipi);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown option '", args[i], "' (see kindling run --help)"));
    }
    if (!s.ok()) return s;
  }
  if (o.vm.virtio.console && !cmdline_given) {
    absl::StrReplaceAll({{"console=ttyS0", "console=hvc0"}}, &o.vm.cmdline);
  }
  if (o.vm.virtio.transport == VirtioTransport::kPci && !cmdline_given) {
    absl::StrReplaceAll({{" pci=off", ""}}, &o.vm.cmdline);
  }
  if (!o.restore_dir.empty()) {
    if (absl::Status r = CheckRestoreFlags(given, "--restore"); !r.ok()) return r;
    return o;
  }
  if (!o.incoming.empty()) {
    if (absl::Status r = CheckRestoreFlags(given, "--incoming"); !r.ok()) return r;
    return o;
  }
  if (!o.help && o.vm.kernel.empty()) {
    return absl::InvalidArgumentError("--kernel is required (see kindling run --help)");
  }
  return o;
}

int ExitStatusOf(const vcpu::VcpuRunner::Outcome& out) {
  switch (out.reason) {
    case vcpu::VcpuRunner::StopReason::kShutdown:
      return 0;
    case vcpu::VcpuRunner::StopReason::kCrash:
      return kExitGuestCrashed;
    case vcpu::VcpuRunner::StopReason::kGuestExit:
    case vcpu::VcpuRunner::StopReason::kRequested:
      break;
  }
  return out.exit_code;
}

}  // namespace kindling
