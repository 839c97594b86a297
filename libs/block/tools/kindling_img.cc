// kindling-img: qemu-img's verbs and flags over libs/block.
//
//   kindling-img create -f qcow2 [-b BACKING -F FMT] [-o cluster_size=N] FILE [SIZE]
//   kindling-img info [-f FMT] [--output human|json] FILE
//   kindling-img check [-f FMT] [-r leaks|all] FILE
//   kindling-img convert [-f FMT] -O FMT [-o OPTS] [-p] IN OUT
//   kindling-img compare [-f FMT] [-F FMT] [-s] A B
//   kindling-img resize [--shrink] [-f FMT] FILE [+|-]SIZE
//   kindling-img snapshot -c|-l|-a|-d [NAME] FILE
//   kindling-img bench [-w] [-s SIZE] [-c COUNT] [-d DEPTH] [-o OFFSET]
//                      [-S STEP] [-t none|writeback] [-f FMT] FILE
//
// Exit codes follow qemu-img: check 0 clean, 2 corruptions, 3 leaks only,
// 1 could not check; compare 0 identical, 1 different, 2 error.
#include <getopt.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "block/backend.h"
#include "block/image.h"
#include "block/qcow2.h"
#include "block/qed.h"
#include "block/raw.h"
#include "block/vhd.h"
#include "kindling/status_macros.h"
#include "libs/block/tools/version.h"

namespace {

using namespace block;

int Fail(const absl::Status& s) {
  fprintf(stderr, "kindling-img: %s\n", std::string(s.message()).c_str());
  return 1;
}

int Usage(const char* msg) {
  fprintf(stderr, "kindling-img: %s\nTry 'kindling-img help'.\n", msg);
  return 1;
}

// 512, 64k, 1M, 10G, 1.5T (binary units, as qemu-img).
absl::StatusOr<uint64_t> ParseSize(std::string s) {
  if (s.empty()) return absl::InvalidArgumentError("empty size");
  uint64_t mult = 1;
  char last = s.back();
  const char* units = "bkmgtpe";
  const char* u = strchr(units, tolower(last));
  if (u != nullptr && !isdigit(last)) {
    mult = last == 'b' || last == 'B' ? 1 : 1ULL << (10 * (u - units));
    s.pop_back();
  }
  double v;
  if (!absl::SimpleAtod(s, &v) || v < 0 || v * mult > 9.2e18) {
    return absl::InvalidArgumentError(absl::StrFormat("invalid size '%s'", s));
  }
  return static_cast<uint64_t>(v * mult);
}

std::string HumanSize(uint64_t v) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double d = v;
  int i = 0;
  while (d >= 1024 && i < 6) {
    d /= 1024;
    ++i;
  }
  if (i == 0) return absl::StrFormat("%u B", v);
  std::string s = absl::StrFormat("%.3g %s", d, units[i]);
  return s;
}

std::map<std::string, std::string> ParseOpts(const std::string& o) {
  std::map<std::string, std::string> m;
  if (o.empty()) return m;
  for (absl::string_view kv : absl::StrSplit(o, ',')) {
    auto p = kv.find('=');
    if (p == absl::string_view::npos) {
      m[std::string(kv)] = "on";
    } else {
      m[std::string(kv.substr(0, p))] = std::string(kv.substr(p + 1));
    }
  }
  return m;
}

absl::Status CreateImage(const std::string& fmt, const std::string& path,
                         uint64_t size, const std::string& backing,
                         const std::string& backing_fmt,
                         std::map<std::string, std::string> opts) {
  if (fmt == "raw") {
    if (!backing.empty()) {
      return absl::InvalidArgumentError("raw images cannot have a backing file");
    }
    return RawImage::Create(path, size);
  }
  if (fmt == "vpc" || fmt == "vhd") {
    if (!backing_fmt.empty() && backing_fmt != "vpc" && backing_fmt != "vhd") {
      return absl::InvalidArgumentError("a VHD's parent (-b) must be a VHD (-F vpc)");
    }
    VhdCreateOptions v{.size = (size + 511) / 512 * 512, .parent = backing};
    for (const auto& [k, val] : opts) {
      if (k == "subformat") {
        v.fixed = val == "fixed";
      } else if (k == "block_size") {
        ASSIGN_OR_RETURN(uint64_t bs, ParseSize(val));
        v.block_size = bs;
      } else if (k != "force_size") {
        return absl::InvalidArgumentError(absl::StrFormat("unsupported vpc option '%s'", k));
      }
    }
    return VhdImage::Create(path, v);
  }
  if (fmt == "qed") {
    QedCreateOptions q{.size = (size + 511) / 512 * 512, .backing_file = backing,
                       .backing_format = backing_fmt};
    for (const auto& [k, val] : opts) {
      if (k == "cluster_size") {
        ASSIGN_OR_RETURN(uint64_t v, ParseSize(val));
        q.cluster_size = v;
      } else if (k == "table_size") {
        if (!absl::SimpleAtoi(val, &q.table_size)) return absl::InvalidArgumentError("bad table_size");
      } else {
        return absl::InvalidArgumentError(absl::StrFormat("unsupported qed option '%s'", k));
      }
    }
    if (!backing.empty() && size == 0) {
      std::string bpath = backing;
      if (bpath[0] != '/') {
        size_t slash = path.rfind('/');
        if (slash != std::string::npos) bpath = path.substr(0, slash + 1) + bpath;
      }
      ASSIGN_OR_RETURN(auto b, OpenImage(bpath, {.read_only = true, .format = backing_fmt}));
      q.size = b->size();
    }
    return QedImage::Create(path, q);
  }
  if (fmt != "qcow2") {
    return absl::UnimplementedError(
        absl::StrFormat("cannot create images of format '%s'", fmt));
  }
  Qcow2CreateOptions c;
  c.size = size;
  c.backing_file = backing;
  c.backing_format = backing_fmt;
  if (opts.count("backing_file")) c.backing_file = opts["backing_file"];
  if (opts.count("backing_fmt")) c.backing_format = opts["backing_fmt"];
  if (opts.count("cluster_size")) {
    ASSIGN_OR_RETURN(c.cluster_size, ParseSize(opts["cluster_size"]));
  }
  if (opts.count("refcount_bits")) {
    if (!absl::SimpleAtoi(opts["refcount_bits"], &c.refcount_bits)) {
      return absl::InvalidArgumentError("bad refcount_bits");
    }
  }
  if (opts.count("compression_type")) c.zstd = opts["compression_type"] == "zstd";
  for (const auto& [k, v] : opts) {
    if (k != "cluster_size" && k != "refcount_bits" && k != "compression_type" &&
        k != "backing_file" && k != "backing_fmt" &&
        !(k == "compat" && (v == "1.1" || v == "v3"))) {
      return absl::InvalidArgumentError(
          absl::StrFormat("unsupported qcow2 option '%s=%s'", k, v));
    }
  }
  if (!c.backing_file.empty() && size == 0) {
    std::string bpath = c.backing_file;
    if (bpath[0] != '/') {
      size_t slash = path.rfind('/');
      if (slash != std::string::npos) bpath = path.substr(0, slash + 1) + bpath;
    }
    ASSIGN_OR_RETURN(auto b, OpenImage(bpath, {.read_only = true,
                                              .format = c.backing_format}));
    c.size = b->size();
  }
  return Qcow2Image::Create(path, c);
}

int CmdCreate(int argc, char** argv) {
  std::string fmt = "raw", backing, backing_fmt, opts;
  int ch;
  optind = 1;
  while ((ch = getopt(argc, argv, "f:b:F:o:uq")) != -1) {
    switch (ch) {
      case 'f': fmt = optarg; break;
      case 'b': backing = optarg; break;
      case 'F': backing_fmt = optarg; break;
      case 'o': opts = optarg; break;
      case 'u': case 'q': break;
      default: return Usage("create: bad option");
    }
  }
  if (optind >= argc) return Usage("create: FILE is missing");
  std::string file = argv[optind];
  uint64_t size = 0;
  if (optind + 1 < argc) {
    auto s = ParseSize(argv[optind + 1]);
    if (!s.ok()) return Fail(s.status());
    size = *s;
  } else if (backing.empty()) {
    return Usage("create: SIZE is missing");
  }
  if (auto s = CreateImage(fmt, file, size, backing, backing_fmt, ParseOpts(opts)); !s.ok()) {
    return Fail(s);
  }
  if (size == 0) {  // taken from the backing file: say what it became
    auto img = OpenImage(file, {.read_only = true, .format = fmt});
    if (img.ok()) size = (*img)->size();
  }
  printf("Formatting '%s', fmt=%s size=%llu\n", file.c_str(), fmt.c_str(),
         static_cast<unsigned long long>(size));
  return 0;
}

std::string JsonEscape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      o += absl::StrFormat("\\u%04x", c);
    } else {
      o += c;
    }
  }
  return o;
}

int CmdInfo(int argc, char** argv) {
  std::string fmt, output = "human";
  static option longopts[] = {{"output", required_argument, nullptr, 'O'},
                              {"backing-chain", no_argument, nullptr, 'B'},
                              {nullptr, 0, nullptr, 0}};
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "f:U", longopts, nullptr)) != -1) {
    switch (ch) {
      case 'f': fmt = optarg; break;
      case 'O': output = optarg; break;
      case 'B': case 'U': break;
      default: return Usage("info: bad option");
    }
  }
  if (optind >= argc) return Usage("info: FILE is missing");
  std::string file = argv[optind];
  auto img = OpenImage(file, {.read_only = true, .format = fmt});
  if (!img.ok()) return Fail(img.status());
  struct stat st{};
  stat(file.c_str(), &st);
  const uint64_t actual = uint64_t(st.st_blocks) * 512;
  Qcow2Info qi;
  auto* q = dynamic_cast<Qcow2Image*>(img->get());
  if (q) qi = q->info();
  if (auto* v = dynamic_cast<VhdImage*>(img->get()); v && v->differencing()) {
    qi.backing_file = v->parent_path();  // as qemu-img prints a backing file
    qi.backing_format = "vpc";
  }
  const std::string format((*img)->format());
  if (output == "json") {
    std::string j = "{\n";
    if (q && !qi.snapshots.empty()) {
      j += "    \"snapshots\": [\n";
      for (size_t i = 0; i < qi.snapshots.size(); ++i) {
        const auto& s = qi.snapshots[i];
        j += absl::StrFormat(
            "        {\n            \"icount\": 0,\n            \"vm-state-size\": %u,\n"
            "            \"date-sec\": %u,\n            \"date-nsec\": %u,\n"
            "            \"vm-clock-sec\": %u,\n            \"vm-clock-nsec\": %u,\n"
            "            \"id\": \"%s\",\n            \"name\": \"%s\"\n        }%s\n",
            s.vm_state_size, s.date_sec, s.date_nsec, s.vm_clock_nsec / 1000000000,
            s.vm_clock_nsec % 1000000000, JsonEscape(s.id), JsonEscape(s.name),
            i + 1 < qi.snapshots.size() ? "," : "");
      }
      j += "    ],\n";
    }
    j += absl::StrFormat("    \"virtual-size\": %u,\n", (*img)->size());
    j += absl::StrFormat("    \"filename\": \"%s\",\n", JsonEscape(file));
    if (q) j += absl::StrFormat("    \"cluster-size\": %u,\n", qi.cluster_size);
    j += absl::StrFormat("    \"format\": \"%s\",\n", format);
    j += absl::StrFormat("    \"actual-size\": %u,\n", actual);
    if (!qi.backing_file.empty()) {
      j += absl::StrFormat("    \"backing-filename\": \"%s\",\n", JsonEscape(qi.backing_file));
      if (!qi.backing_format.empty()) {
        j += absl::StrFormat("    \"backing-filename-format\": \"%s\",\n",
                             JsonEscape(qi.backing_format));
      }
    }
    if (q) {
      j += absl::StrFormat(
          "    \"format-specific\": {\n        \"type\": \"qcow2\",\n"
          "        \"data\": {\n            \"compat\": \"%s\",\n"
          "            \"compression-type\": \"%s\",\n"
          "            \"lazy-refcounts\": %s,\n            \"refcount-bits\": %u,\n"
          "            \"corrupt\": %s,\n            \"extended-l2\": false\n"
          "        }\n    },\n",
          qi.version == 3 ? "1.1" : "0.10", qi.zstd ? "zstd" : "zlib",
          qi.lazy_refcounts ? "true" : "false", qi.refcount_bits,
          qi.corrupt ? "true" : "false");
    }
    j += absl::StrFormat("    \"dirty-flag\": %s\n}\n", qi.dirty ? "true" : "false");
    fputs(j.c_str(), stdout);
    return 0;
  }
  printf("image: %s\nfile format: %s\n", file.c_str(), format.c_str());
  printf("virtual size: %s (%llu bytes)\n", HumanSize((*img)->size()).c_str(),
         static_cast<unsigned long long>((*img)->size()));
  printf("disk size: %s\n", HumanSize(actual).c_str());
  if (q) printf("cluster_size: %llu\n", static_cast<unsigned long long>(qi.cluster_size));
  if (!qi.backing_file.empty()) {
    printf("backing file: %s\n", qi.backing_file.c_str());
    if (!qi.backing_format.empty()) {
      printf("backing file format: %s\n", qi.backing_format.c_str());
    }
  }
  if (q) {
    if (!qi.snapshots.empty()) {
      printf("Snapshot list:\nID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n");
      for (const auto& s : qi.snapshots) {
        printf("%-9s %-17s %7s %20u %12llu\n", s.id.c_str(), s.name.c_str(),
               HumanSize(s.vm_state_size).c_str(), s.date_sec,
               static_cast<unsigned long long>(s.vm_clock_nsec));
      }
    }
    printf("Format specific information:\n    compat: %s\n    compression type: %s\n"
           "    lazy refcounts: %s\n    refcount bits: %u\n    corrupt: %s\n"
           "    extended l2: false\n",
           qi.version == 3 ? "1.1" : "0.10", qi.zstd ? "zstd" : "zlib",
           qi.lazy_refcounts ? "true" : "false", qi.refcount_bits,
           qi.corrupt ? "true" : "false");
  }
  return 0;
}

void PrintCheck(const CheckResult& r, bool repaired) {
  for (const auto& m : r.messages) fprintf(stderr, "%s\n", m.c_str());
  if (repaired && (r.leaks_fixed || r.corruptions_fixed)) {
    printf("The following inconsistencies were found and repaired:\n\n"
           "    %llu leaked clusters\n    %llu corruptions\n\n",
           static_cast<unsigned long long>(r.leaks_fixed),
           static_cast<unsigned long long>(r.corruptions_fixed));
  }
  uint64_t corr = r.corruptions - r.corruptions_fixed;
  uint64_t leaks = r.leaks - r.leaks_fixed;
  if (corr == 0 && leaks == 0 && r.check_errors == 0) {
    printf("No errors were found on the image.\n");
  }
  if (corr) {
    printf("\n%llu errors were found on the image.\nData may be corrupted, or "
           "further writes to the image may corrupt it.\n",
           static_cast<unsigned long long>(corr));
  }
  if (leaks) {
    printf("\n%llu leaked clusters were found on the image.\nThis means waste "
           "of disk space, but no harm to data.\n",
           static_cast<unsigned long long>(leaks));
  }
  if (r.check_errors) {
    printf("\n%llu internal errors have occurred during the check.\n",
           static_cast<unsigned long long>(r.check_errors));
  }
  if (r.total_clusters) {
    printf("%llu/%llu = %.2f%% allocated, %.2f%% compressed clusters\n",
           static_cast<unsigned long long>(r.allocated_clusters),
           static_cast<unsigned long long>(r.total_clusters),
           100.0 * r.allocated_clusters / r.total_clusters,
           r.allocated_clusters ? 100.0 * r.compressed_clusters / r.allocated_clusters : 0.0);
  }
  printf("Image end offset: %llu\n", static_cast<unsigned long long>(r.image_end_offset));
}

int CmdCheck(int argc, char** argv) {
  std::string fmt, repair;
  static option longopts[] = {{"output", required_argument, nullptr, 'O'},
                              {nullptr, 0, nullptr, 0}};
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "f:r:qU", longopts, nullptr)) != -1) {
    switch (ch) {
      case 'f': fmt = optarg; break;
      case 'r': repair = optarg; break;
      case 'O': case 'q': case 'U': break;
      default: return Usage("check: bad option");
    }
  }
  if (optind >= argc) return Usage("check: FILE is missing");
  RepairMode mode = RepairMode::kNone;
  if (repair == "leaks") mode = RepairMode::kLeaks;
  else if (repair == "all") mode = RepairMode::kAll;
  else if (!repair.empty()) return Usage("check: -r takes leaks or all");
  std::string file = argv[optind];
  auto img = OpenImage(file, {.read_only = mode == RepairMode::kNone,
                              .format = fmt,
                              .repair_dirty = false});
  if (!img.ok()) {
    // A corrupt or dirty image opens read-only for the check itself.
    if (mode == RepairMode::kNone) return Fail(img.status());
    img = OpenImage(file, {.read_only = false,
                           .format = fmt,
                           .repair_dirty = true,
                           .repair_corrupt = mode == RepairMode::kAll});
    if (!img.ok()) return Fail(img.status());
  }
  if (auto* qed = dynamic_cast<QedImage*>(img->get())) {
    auto r = qed->Check(mode != RepairMode::kNone);
    if (!r.ok()) return Fail(r.status());
    if (r->corruptions == 0 && r->leaks == 0) printf("No errors were found on the image.\n");
    if (r->corruptions) printf("%llu errors were found on the image (%llu repaired).\n",
                               (unsigned long long)r->corruptions, (unsigned long long)r->fixed);
    if (r->leaks) printf("%llu leaked clusters were found on the image.\n",
                         (unsigned long long)r->leaks);
    if (r->corruptions > r->fixed) return 2;
    return r->leaks ? 3 : 0;
  }
  auto* q = dynamic_cast<Qcow2Image*>(img->get());
  if (q == nullptr) {
    fprintf(stderr, "kindling-img: This image format does not support checks\n");
    return 63;
  }
  auto r = q->Check(mode);
  if (!r.ok()) return Fail(r.status());
  if (mode != RepairMode::kNone && (r->leaks_fixed || r->corruptions_fixed)) {
    PrintCheck(*r, true);
    printf("Double checking the fixed image now...\n");
    r = q->Check(RepairMode::kNone);
    if (!r.ok()) return Fail(r.status());
  }
  PrintCheck(*r, false);
  if (r->check_errors) return 1;
  if (r->corruptions > r->corruptions_fixed) return 2;
  if (r->leaks > r->leaks_fixed) return 3;
  return 0;
}

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i]) return false;
  }
  return true;
}

int CmdConvert(int argc, char** argv) {
  std::string in_fmt, out_fmt, opts;
  bool progress = false;
  int ch;
  optind = 1;
  while ((ch = getopt(argc, argv, "f:O:o:pcqnU")) != -1) {
    switch (ch) {
      case 'f': in_fmt = optarg; break;
      case 'O': out_fmt = optarg; break;
      case 'o': opts = optarg; break;
      case 'p': progress = true; break;
      case 'c': return Fail(absl::UnimplementedError("writing compressed clusters (-c) is not supported"));
      case 'q': case 'n': case 'U': break;
      default: return Usage("convert: bad option");
    }
  }
  if (out_fmt.empty()) out_fmt = "raw";
  if (optind + 2 != argc) return Usage("convert: need IN and OUT");
  std::string in_path = argv[optind], out_path = argv[optind + 1];
  auto in = OpenImage(in_path, {.read_only = true, .format = in_fmt});
  if (!in.ok()) return Fail(in.status());
  const uint64_t size = (*in)->size();
  if (auto s = CreateImage(out_fmt, out_path, size, "", "", ParseOpts(opts)); !s.ok()) {
    return Fail(s);
  }
  auto out = OpenImage(out_path, {.format = out_fmt});
  if (!out.ok()) return Fail(out.status());
  const bool backing = (*in)->capabilities().backing;
  const uint64_t chunk = 2 << 20;
  std::vector<uint8_t> buf(chunk);
  int last_pct = -1;
  for (uint64_t off = 0; off < size;) {
    auto ext = (*in)->BlockStatus(off, std::min(chunk, size - off));
    if (!ext.ok()) return Fail(ext.status());
    uint64_t n = ext->length;
    bool skip = ext->kind == ExtentKind::kZero ||
                (ext->kind == ExtentKind::kUnallocated && !backing);
    if (!skip) {
      if (auto s = (*in)->Read(off, buf.data(), n); !s.ok()) return Fail(s);
      // Only write the parts that are not zero: the new image reads zeros.
      for (uint64_t p = 0; p < n;) {
        uint64_t step = std::min<uint64_t>(65536 - (off + p) % 65536, n - p);
        if (!AllZero(&buf[p], step)) {
          uint64_t q = p + step;
          while (q < n) {
            uint64_t s2 = std::min<uint64_t>(65536, n - q);
            if (AllZero(&buf[q], s2)) break;
            q += s2;
          }
          if (auto s = (*out)->Write(off + p, &buf[p], q - p); !s.ok()) return Fail(s);
          p = q;
        } else {
          p += step;
        }
      }
    }
    off += n;
    if (progress) {
      int pct = static_cast<int>(off * 10000 / std::max<uint64_t>(size, 1));
      if (pct != last_pct) {
        printf("    (%.2f/100%%)\r", pct / 100.0);
        fflush(stdout);
        last_pct = pct;
      }
    }
  }
  if (progress) printf("    (100.00/100%%)\n");
  if (auto s = (*out)->Flush(); !s.ok()) return Fail(s);
  return 0;
}

int CmdCompare(int argc, char** argv) {
  std::string fa, fb;
  bool strict = false;
  int ch;
  optind = 1;
  while ((ch = getopt(argc, argv, "f:F:sqpU")) != -1) {
    switch (ch) {
      case 'f': fa = optarg; break;
      case 'F': fb = optarg; break;
      case 's': strict = true; break;
      case 'q': case 'p': case 'U': break;
      default: Usage("compare: bad option"); return 2;
    }
  }
  if (fb.empty()) fb = fa;
  if (optind + 2 != argc) {
    Usage("compare: need two images");
    return 2;
  }
  auto a = OpenImage(argv[optind], {.read_only = true, .format = fa});
  if (!a.ok()) return Fail(a.status()) + 1;
  auto b = OpenImage(argv[optind + 1], {.read_only = true, .format = fb});
  if (!b.ok()) return Fail(b.status()) + 1;
  const uint64_t sa = (*a)->size(), sb = (*b)->size();
  if (sa != sb) {
    if (strict) {
      printf("Strict mode: Image size mismatch!\n");
      return 1;
    }
    printf("Warning: Image size mismatch!\n");
  }
  const uint64_t chunk = 1 << 20;
  std::vector<uint8_t> x(chunk), y(chunk);
  const uint64_t common = std::min(sa, sb);
  for (uint64_t off = 0; off < common; off += chunk) {
    uint64_t n = std::min(chunk, common - off);
    if (auto s = (*a)->Read(off, x.data(), n); !s.ok()) return Fail(s) + 1;
    if (auto s = (*b)->Read(off, y.data(), n); !s.ok()) return Fail(s) + 1;
    if (memcmp(x.data(), y.data(), n) != 0) {
      uint64_t i = 0;
      while (x[i] == y[i]) ++i;
      printf("Content mismatch at offset %llu!\n",
             static_cast<unsigned long long>(off + (i & ~511ULL)));
      return 1;
    }
  }
  Image& longer = sa > sb ? **a : **b;
  for (uint64_t off = common; off < longer.size(); off += chunk) {
    uint64_t n = std::min(chunk, longer.size() - off);
    if (auto s = longer.Read(off, x.data(), n); !s.ok()) return Fail(s) + 1;
    if (!AllZero(x.data(), n)) {
      uint64_t i = 0;
      while (x[i] == 0) ++i;
      printf("Content mismatch at offset %llu!\n",
             static_cast<unsigned long long>(off + (i & ~511ULL)));
      return 1;
    }
  }
  printf("Images are identical.\n");
  return 0;
}

int CmdResize(int argc, char** argv) {
  std::string fmt;
  bool shrink = false;
  int ch;
  optind = 1;
  static const option kLong[] = {{"shrink", no_argument, nullptr, 's'}, {nullptr, 0, nullptr, 0}};
  // A size like -1G must not be taken for an option: stop at the file.
  while ((ch = getopt_long(argc, argv, "+f:q", kLong, nullptr)) != -1) {
    switch (ch) {
      case 'f': fmt = optarg; break;
      case 's': shrink = true; break;
      case 'q': break;
      default: return Usage("resize: bad option");
    }
  }
  if (optind + 2 != argc) return Usage("resize: need FILE and SIZE");
  std::string file = argv[optind], arg = argv[optind + 1];
  auto img = OpenImage(file, {.format = fmt});
  if (!img.ok()) return Fail(img.status());
  int sign = 0;
  if (arg[0] == '+' || arg[0] == '-') {
    sign = arg[0] == '+' ? 1 : -1;
    arg = arg.substr(1);
  }
  auto v = ParseSize(arg);
  if (!v.ok()) return Fail(v.status());
  uint64_t cur = (*img)->size(), target = *v;
  if (sign > 0) target = cur + *v;
  if (sign < 0) {
    if (*v > cur) return Fail(absl::InvalidArgumentError("size would be negative"));
    target = cur - *v;
  }
  if (target < cur && !shrink) {
    // As qemu-img: losing the data past the new end must be asked for.
    return Fail(absl::FailedPreconditionError(absl::StrFormat(
        "%s: shrinking from %d to %d bytes drops the data past the new end; use the "
        "--shrink option to perform a shrink operation",
        file, cur, target)));
  }
  if (auto s = (*img)->Resize(target); !s.ok()) return Fail(s);
  if (auto s = (*img)->Flush(); !s.ok()) return Fail(s);
  printf("Image resized.\n");
  return 0;
}

int CmdSnapshot(int argc, char** argv) {
  char action = 0;
  std::string name;
  int ch;
  optind = 1;
  while ((ch = getopt(argc, argv, "c:a:d:lqU")) != -1) {
    switch (ch) {
      case 'c': case 'a': case 'd':
        action = ch;
        name = optarg;
        break;
      case 'l': action = 'l'; break;
      case 'q': case 'U': break;
      default: return Usage("snapshot: bad option");
    }
  }
  if (action == 0 || optind + 1 != argc) return Usage("snapshot: need -c|-l|-a|-d and FILE");
  auto q = Qcow2Image::Open(argv[optind], {.read_only = action == 'l'});
  if (!q.ok()) return Fail(q.status());
  absl::Status s;
  switch (action) {
    case 'l': {
      auto list = (*q)->ListSnapshots();
      if (!list.ok()) return Fail(list.status());
      if (list->empty()) return 0;
      printf("Snapshot list:\nID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n");
      for (const auto& sn : *list) {
        printf("%-9s %-17s %7s %20u %12llu\n", sn.id.c_str(), sn.name.c_str(),
               HumanSize(sn.vm_state_size).c_str(), sn.date_sec,
               static_cast<unsigned long long>(sn.vm_clock_nsec));
      }
      return 0;
    }
    case 'c': s = (*q)->CreateSnapshot(name); break;
    case 'a': s = (*q)->ApplySnapshot(name); break;
    case 'd': s = (*q)->DeleteSnapshot(name); break;
  }
  if (s.ok()) s = (*q)->Flush();
  return s.ok() ? 0 : Fail(s);
}

int CmdBench(int argc, char** argv) {
  std::string fmt, cache = "writeback", aio;
  uint64_t bufsize = 4096, count = 75000, depth = 64, offset = 0, step = 0;
  bool write = false;
  int flush_interval = 0;
  static option longopts[] = {{"flush-interval", required_argument, nullptr, 'I'},
                              {"pattern", required_argument, nullptr, 'P'},
                              {"no-drain", no_argument, nullptr, 'N'},
                              {nullptr, 0, nullptr, 0}};
  int pattern = 0;
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "c:d:f:ni:o:qs:S:t:wU", longopts, nullptr)) != -1) {
    absl::StatusOr<uint64_t> v;
    switch (ch) {
      case 'c': if (!absl::SimpleAtoi(optarg, &count)) return Usage("bench: bad -c"); break;
      case 'd': if (!absl::SimpleAtoi(optarg, &depth) || depth == 0) return Usage("bench: bad -d"); break;
      case 'f': fmt = optarg; break;
      case 'n': cache = "none"; break;
      case 'i': aio = optarg; break;
      case 'o': v = ParseSize(optarg); if (!v.ok()) return Fail(v.status()); offset = *v; break;
      case 's': v = ParseSize(optarg); if (!v.ok()) return Fail(v.status()); bufsize = *v; break;
      case 'S': v = ParseSize(optarg); if (!v.ok()) return Fail(v.status()); step = *v; break;
      case 't': cache = optarg; break;
      case 'w': write = true; break;
      case 'I': flush_interval = atoi(optarg); break;
      case 'P': pattern = atoi(optarg); break;
      case 'q': case 'N': case 'U': break;
      default: return Usage("bench: bad option");
    }
  }
  if (optind + 1 != argc) return Usage("bench: FILE is missing");
  if (step == 0) step = bufsize;
  if (cache != "none" && cache != "writeback" && cache != "directsync" &&
      cache != "writethrough") {
    return Usage("bench: -t takes none or writeback");
  }
  BackendOptions bo;
  bo.open.format = fmt;
  bo.open.read_only = !write;
  bo.open.direct = cache == "none" || cache == "directsync";
  bo.queue_depth = std::max<uint64_t>(depth, 1);
  bo.threads = std::max<uint64_t>(depth, 1);  // as many workers as requests in flight
  if (aio == "threads") bo.engine = Engine::kThreads;
  if (aio == "io_uring") bo.engine = Engine::kIoUring;
  auto b = OpenBackend(argv[optind], bo);
  if (!b.ok()) return Fail(b.status());
  BlockBackend& be = **b;
  const uint64_t size = be.size();
  if (bufsize == 0 || bufsize > size) return Usage("bench: bad buffer size");
  printf("Sending %llu %s requests, %llu bytes each, %llu in parallel (starting "
         "at offset %llu, step size %llu)\n",
         static_cast<unsigned long long>(count), write ? "write" : "read",
         static_cast<unsigned long long>(bufsize),
         static_cast<unsigned long long>(depth),
         static_cast<unsigned long long>(offset),
         static_cast<unsigned long long>(step));
  std::vector<void*> bufs(depth);
  for (auto& p : bufs) {
    if (posix_memalign(&p, kDirectAlignment, bufsize) != 0) return Fail(absl::ResourceExhaustedError("oom"));
    memset(p, pattern, bufsize);
  }
  std::mutex mu;
  std::condition_variable cv;
  uint64_t submitted = 0, completed = 0, since_flush = 0;
  uint64_t next = offset;
  absl::Status err;
  uint64_t flushes_submitted = 0, flushes_done = 0;
  std::function<void(size_t)> issue;
  auto done = [&](size_t slot, absl::Status s) {
    std::unique_lock<std::mutex> l(mu);
    if (!s.ok() && err.ok()) err = s;
    ++completed;
    // Wake the waiting thread only when it may be done (not on every request).
    if (completed == submitted && (submitted == count || !err.ok())) cv.notify_all();
    if (submitted < count && err.ok()) {
      l.unlock();
      issue(slot);
    }
  };
  issue = [&](size_t slot) {
    uint64_t off;
    bool flush = false;
    {
      std::lock_guard<std::mutex> l(mu);
      if (submitted >= count) return;
      ++submitted;
      off = next;
      next += step;
      if (next + bufsize > size) next = size > 0 ? next % size : 0;
      if (next + bufsize > size) next = 0;
      // --flush-interval N: a flush after every N writes (not drained).
      if (write && flush_interval > 0 && ++since_flush >= uint64_t(flush_interval)) {
        since_flush = 0;
        flush = true;
        ++flushes_submitted;
      }
    }
    Request r = write ? Request::Write(off, bufs[slot], bufsize)
                      : Request::Read(off, bufs[slot], bufsize);
    be.Submit(std::move(r), [&, slot](absl::Status s) { done(slot, std::move(s)); });
    if (flush) {
      be.Submit(Request::Flush(), [&](absl::Status s) {
        std::lock_guard<std::mutex> l(mu);
        if (!s.ok() && err.ok()) err = s;
        ++flushes_done;
        cv.notify_all();
      });
    }
  };
  auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < depth && i < count; ++i) issue(i);
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] {
      return completed == submitted && flushes_done == flushes_submitted &&
             (submitted == count || !err.ok());
    });
  }
  auto t1 = std::chrono::steady_clock::now();
  double secs = std::chrono::duration<double>(t1 - t0).count();
  if (!err.ok()) return Fail(err);
  printf("Run completed in %.3f seconds.\n", secs);
  const BackendStats st = be.stats();
  printf("IOPS: %.0f (%s, %s; %llu requests mapped, %llu on the thread pool)\n",
         count / secs, std::string(be.engine()).c_str(), cache.c_str(),
         static_cast<unsigned long long>(st.direct_requests),
         static_cast<unsigned long long>(st.pool_requests));
  if (write) {
    SyncBackend sync(be);
    if (auto s = sync.Flush(); !s.ok()) return Fail(s);
  }
  b->reset();
  for (auto p : bufs) free(p);
  return 0;
}

void Help() {
  puts(
      "usage: kindling-img COMMAND [options]    (kindling-img --version)\n"
      "  create -f FMT [-b BACKING -F FMT] [-o cluster_size=N,...] FILE [SIZE]\n"
      "  info [-f FMT] [--output human|json] FILE\n"
      "  check [-f FMT] [-r leaks|all] FILE\n"
      "  convert [-f FMT] -O FMT [-o OPTS] [-p] IN OUT\n"
      "  compare [-f FMT] [-F FMT] [-s] A B\n"
      "  resize [--shrink] [-f FMT] FILE [+|-]SIZE\n"
      "  snapshot -c NAME | -l | -a NAME | -d NAME FILE\n"
      "  bench [-w] [-s SIZE] [-c COUNT] [-d DEPTH] [-o OFFSET] [-S STEP]\n"
      "        [-t none|writeback] [-i threads|io_uring] [-f FMT] FILE\n"
      "Formats: raw, qcow2, qed, vpc (VHD: -o subformat=fixed|dynamic).");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    Help();
    return 1;
  }
  std::string cmd = argv[1];
  argc -= 1;
  argv += 1;
  if (cmd == "create") return CmdCreate(argc, argv);
  if (cmd == "info") return CmdInfo(argc, argv);
  if (cmd == "check") return CmdCheck(argc, argv);
  if (cmd == "convert") return CmdConvert(argc, argv);
  if (cmd == "compare") return CmdCompare(argc, argv);
  if (cmd == "resize") return CmdResize(argc, argv);
  if (cmd == "snapshot") return CmdSnapshot(argc, argv);
  if (cmd == "bench") return CmdBench(argc, argv);
  if (cmd == "help" || cmd == "--help" || cmd == "-h") {
    Help();
    return 0;
  }
  if (cmd == "--version" || cmd == "version") {
    printf("kindling-img %s (libs/block)\n", KINDLING_BLOCK_VERSION);
    return 0;
  }
  fprintf(stderr, "kindling-img: unknown command '%s'\n", cmd.c_str());
  return 1;
}
