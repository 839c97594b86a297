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
                          "--pv-eoi", "off", "--irqchip", "split", "--stats",
                          "--cpu-template", "t.json"});
  REQUIRE(o.ok());
  REQUIRE(o->vm.kernel == "k.elf");
  REQUIRE(o->vm.initrd == "rd.img");
  REQUIRE(o->vm.cmdline == "console=ttyS0 a=b");
  REQUIRE(o->vm.cpus == 4);
  REQUIRE(o->vm.memory_mib == 512);
  REQUIRE_FALSE(o->vm.pv.pv_eoi);
  REQUIRE(o->vm.pv.kvmclock);
  REQUIRE(o->vm.irqchip == vcpu::IrqchipMode::kSplit);
  REQUIRE(o->print_stats);
  REQUIRE(o->vm.collect_stats);
  REQUIRE(o->vm.cpu_template == "t.json");
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
