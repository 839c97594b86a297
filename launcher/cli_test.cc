#include "launcher/cli.h"

#include <catch2/catch.hpp>

using kindling::ParseRunFlags;

namespace {
bool Mentions(const absl::Status& s, const std::string& t) {
  return !s.ok() && std::string(s.message()).find(t) != std::string::npos;
}
}  // namespace

TEST_CASE("run flags fill the VM config") {
  auto o = ParseRunFlags({"--kernel", "k.elf", "--initrd=rd.img", "--cmdline",
                          "console=ttyS0 a=b", "--cpus", "4", "--memory=512",
                          "--pv-eoi", "off", "--irqchip", "full", "--stats",
                          "--cpu-template", "t.json"});
  REQUIRE(o.ok());
  REQUIRE(o->vm.kernel == "k.elf");
  REQUIRE(o->vm.initrd == "rd.img");
  REQUIRE(o->vm.cmdline == "console=ttyS0 a=b");
  REQUIRE(o->vm.cpus == 4);
  REQUIRE(o->vm.memory_mib == 512);
  REQUIRE_FALSE(o->vm.pv.pv_eoi);
  REQUIRE(o->vm.pv.kvmclock);
  REQUIRE(o->vm.irqchip == vcpu::IrqchipMode::kFull);
  REQUIRE(o->print_stats);
  REQUIRE(o->vm.collect_stats);
  REQUIRE(o->vm.cpu_template == "t.json");
}

TEST_CASE("the split irqchip is the default; --irqchip full asks for the in-kernel one") {
  auto o = ParseRunFlags({"--kernel", "k"});
  REQUIRE(o.ok());
  REQUIRE(o->vm.irqchip == vcpu::IrqchipMode::kSplit);
  o = ParseRunFlags({"--kernel", "k", "--irqchip", "full"});
  REQUIRE(o.ok());
  REQUIRE(o->vm.irqchip == vcpu::IrqchipMode::kFull);
}

TEST_CASE("PV-EOI is on by default") {
  auto o = ParseRunFlags({"--kernel", "k"});
  REQUIRE(o.ok());
  REQUIRE(o->vm.pv.pv_eoi);
}

TEST_CASE("run flag errors name the flag") {
  REQUIRE(Mentions(ParseRunFlags({}).status(), "--kernel is required"));
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--cpus", "two"}).status(), "--cpus 'two'"));
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--memory", "-5"}).status(), "--memory"));
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--pv-eoi", "maybe"}).status(),
                   "expected on or off"));
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--bogus"}).status(), "unknown option '--bogus'"));
  REQUIRE(Mentions(ParseRunFlags({"--kernel"}).status(), "--kernel needs a value"));
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--irqchip", "half"}).status(), "full or split"));
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--boot-protocol", "efi"}).status(), "pvh or linux"));
  auto o = ParseRunFlags({"--kernel", "k", "--boot-protocol", "linux"});
  REQUIRE(o.ok());
  REQUIRE(o->vm.elf_entry == vcpu::boot::ElfEntry::kLinux64);
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--memory", "99999999999999"}).status(),
                   "at most"));
}

TEST_CASE("ValidateConfig catches bad paths and sizes before KVM") {
  kindling::VmConfig c;
  c.kernel = "/nonexistent/vmlinux";
  REQUIRE(Mentions(kindling::ValidateConfig(c), "/nonexistent/vmlinux"));
  c.kernel = "/proc/self/exe";
  c.memory_mib = 1ULL << 29;  // 512 TiB
  REQUIRE(Mentions(kindling::ValidateConfig(c), "more than this host"));
  c.memory_mib = 4;
  REQUIRE(Mentions(kindling::ValidateConfig(c), "at least"));
  c.memory_mib = 128;
  c.cpus = 0;
  REQUIRE(Mentions(kindling::ValidateConfig(c), "--cpus 0"));
  c.cpus = 1;
  c.cpu_template = "/nonexistent.json";
  REQUIRE(Mentions(kindling::ValidateConfig(c), "/nonexistent.json"));
  c.cpu_template = "";
  REQUIRE(kindling::ValidateConfig(c).ok());
}

TEST_CASE("virtio flags: disks, rng, virtio console") {
  auto o = ParseRunFlags({"--kernel", "k", "--disk", "a.img", "--disk=b.qcow2,ro,format=qcow2",
                          "--rng", "--console", "virtio"});
  REQUIRE(o.ok());
  REQUIRE(o->vm.virtio.disks.size() == 2);
  REQUIRE(o->vm.virtio.disks[0].path == "a.img");
  REQUIRE_FALSE(o->vm.virtio.disks[0].read_only);
  REQUIRE(o->vm.virtio.disks[0].format == "raw");
  REQUIRE(o->vm.virtio.disks[1].read_only);
  REQUIRE(o->vm.virtio.disks[1].format == "qcow2");
  REQUIRE(o->vm.virtio.rng);
  REQUIRE(o->vm.virtio.console);
  REQUIRE(o->vm.cmdline.find("console=hvc0") != std::string::npos);
  auto keep = ParseRunFlags({"--kernel", "k", "--console", "virtio", "--cmdline", "console=ttyS0"});
  REQUIRE(keep->vm.cmdline == "console=ttyS0");  // an explicit cmdline is kept
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--disk", "a,rw"}).status(), "unknown option 'rw'"));
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--disk", ",ro"}).status(), "needs a path"));
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--console", "vga"}).status(), "--console 'vga'"));
}

TEST_CASE("virtio plan: windows, GSIs, cmdline and DSDT agree") {
  kindling::VirtioConfig c;
  c.disks.push_back({"a.img"});
  c.rng = true;
  kindling::VirtioPlan p = kindling::PlanVirtio(c);
  REQUIRE(p.slots.size() == 2);
  REQUIRE(p.CmdlineFragment() ==
          " virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6");
  auto dsdt = p.DsdtDevices();
  REQUIRE(dsdt.size() == 2);
  REQUIRE(dsdt[1].address == 0xd0001000);
  REQUIRE(dsdt[1].irq == 6);
  for (int i = 0; i < 20; ++i) c.disks.push_back({"/dev/null"});
  REQUIRE(Mentions(kindling::ValidateVirtio(c), "at most 19"));
}

bool PackedOffered(const absl::StatusOr<kindling::RunOptions>& o) {
  return o.ok() && o->vm.virtio.packed;
}

TEST_CASE("virtio flags: net, vsock, balloon") {
  auto o = ParseRunFlags({"--kernel", "k", "--net", "tap=tap0,mac=52:54:00:12:34:56", "--net",
                          "tap=tap1", "--vsock", "cid=7,uds=/tmp/v.sock", "--balloon",
                          "amount_mib=64,deflate_on_oom,stats_s=2,reporting=off"});
  REQUIRE(o.ok());
  REQUIRE(o->vm.virtio.nets.size() == 2);
  REQUIRE(o->vm.virtio.nets[0].tap == "tap0");
  REQUIRE((*o->vm.virtio.nets[0].mac)[5] == 0x56);
  REQUIRE_FALSE(o->vm.virtio.nets[1].mac.has_value());
  REQUIRE(o->vm.virtio.vsock->cid == 7);
  REQUIRE(o->vm.virtio.vsock->uds_path == "/tmp/v.sock");
  REQUIRE(o->vm.virtio.balloon->amount_mib == 64);
  REQUIRE(o->vm.virtio.balloon->deflate_on_oom);
  REQUIRE(o->vm.virtio.balloon->stats_interval_s == 2);
  REQUIRE_FALSE(o->vm.virtio.balloon->free_page_reporting);
  auto bare = ParseRunFlags({"--kernel", "k", "--balloon", "--rng"});
  REQUIRE(bare.ok());
  REQUIRE(bare->vm.virtio.balloon->amount_mib == 0);
  REQUIRE(bare->vm.virtio.rng);
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--net", "mac=52:54:00:12:34:56"}).status(),
                   "needs tap=NAME"));
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--net", "tap=t,mac=01:00:00:00:00:01"}).status(),
                   "multicast"));
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--net", "tap=t,mac=zz"}).status(), "six hex"));
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--vsock", "cid=3"}).status(), "uds=PATH"));
  auto packed = ParseRunFlags({"--kernel", "k", "--virtqueue", "packed"});
  REQUIRE(packed.ok());
  REQUIRE(packed->vm.virtio.packed);
  REQUIRE_FALSE(PackedOffered(ParseRunFlags({"--kernel", "k"})));
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--virtqueue", "ring"}).status(),
                   "expected split or packed"));
  auto vhost = ParseRunFlags({"--kernel", "k", "--vsock", "cid=9,vhost"});
  REQUIRE(vhost.ok());
  REQUIRE(vhost->vm.virtio.vsock->vhost);
  REQUIRE(vhost->vm.virtio.vsock->uds_path.empty());
  REQUIRE(ParseRunFlags({"--kernel", "k", "--vsock", "cid=9,vhost=on"}).ok());
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--vsock", "cid=9,vhost,uds=/tmp/v"}).status(),
                   "one host side"));
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--vsock", "cid=9,vhost=maybe"}).status(),
                   "unknown option 'vhost'"));
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--balloon", "size=3"}).status(),
                   "unknown option 'size'"));
  kindling::VirtioConfig c;
  c.vsock = kindling::VsockConfig{2, "/tmp/x"};
  REQUIRE(Mentions(kindling::ValidateVirtio(c), "must be 3 to"));
}

TEST_CASE("virtio flags: --gpu 2d with its mode and memory, and what it refuses") {
  auto o = ParseRunFlags({"--kernel", "k", "--gpu", "2d,width=640,height=480,max_mib=8"});
  REQUIRE(o.ok());
  REQUIRE(o->vm.virtio.gpu->width == 640);
  REQUIRE(o->vm.virtio.gpu->height == 480);
  REQUIRE(o->vm.virtio.gpu->max_mib == 8);
  auto plain = ParseRunFlags({"--kernel", "k", "--gpu", "2d"});
  REQUIRE(plain.ok());
  REQUIRE(plain->vm.virtio.gpu->width == 1280);
  REQUIRE(plain->vm.virtio.gpu->max_mib == 256);
  REQUIRE(kindling::PlanVirtio(plain->vm.virtio).slots.back().kind == kindling::VirtioKind::kGpu);
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--gpu", "width=640"}).status(),
                   "say the mode: 2d or virgl"));
  auto virgl = ParseRunFlags({"--kernel", "k", "--gpu", "virgl,width=800"});
  REQUIRE(virgl.ok());
  REQUIRE(virgl->vm.virtio.gpu->virgl);
  REQUIRE(virgl->vm.virtio.gpu->width == 800);
  REQUIRE(!plain->vm.virtio.gpu->virgl);
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--gpu", "2d,depth=8"}).status(),
                   "unknown option 'depth'"));
  REQUIRE(Mentions(ParseRunFlags({"--kernel", "k", "--gpu", "2d,width=20000"}).status(),
                   "--gpu width"));
  kindling::VirtioConfig c;
  c.gpu = kindling::GpuConfig{4096, 4096, 16};
  REQUIRE(Mentions(kindling::ValidateVirtio(c), "4096x4096 framebuffer does not fit"));
  c.gpu = kindling::GpuConfig{0, 600, 16};
  REQUIRE(Mentions(kindling::ValidateVirtio(c), "each must be 1 to 16384"));
  c.gpu = kindling::GpuConfig{800, 600, 5000};
  REQUIRE(Mentions(kindling::ValidateVirtio(c), "must be 1 to 4096"));
}

TEST_CASE("--restore needs no kernel and refuses flags that shape a new machine") {
  auto o = ParseRunFlags({"--restore", "/snap", "--restore-mode", "lazy", "--stats"});
  REQUIRE(o.ok());
  REQUIRE(o->restore_dir == "/snap");
  REQUIRE(o->restore_mode == ::migration::RestoreMode::kLazy);
  REQUIRE(o->print_stats);
  o = ParseRunFlags({"--restore=/snap"});
  REQUIRE(o.ok());
  REQUIRE(o->restore_mode == ::migration::RestoreMode::kEager);
  REQUIRE(Mentions(ParseRunFlags({"--restore", "/s", "--cpus", "2"}).status(),
                   "--cpus cannot be given with --restore"));
  REQUIRE(Mentions(ParseRunFlags({"--restore", "/s", "--kernel", "k"}).status(),
                   "--kernel cannot be given with --restore"));
  REQUIRE(ParseRunFlags({"--restore", "/s", "--restore-mode", "uffd"})->restore_mode ==
          ::migration::RestoreMode::kUffd);
  REQUIRE(Mentions(ParseRunFlags({"--restore", "/s", "--restore-mode", "postcopy"}).status(),
                   "expected eager, lazy or uffd"));
  REQUIRE(Mentions(ParseRunFlags({"--restore"}).status(), "--restore needs a value"));
}
