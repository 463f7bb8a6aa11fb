#include <cerrno>
#include <cstring>

#include "edgeformer/errors.h"
#include "edgeformer/safetensors.h"

#if defined(_WIN32)
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#else
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace ef {

#if defined(_WIN32)
MappedFile::MappedFile(const std::string& path) : path_(path) {
  HANDLE f = CreateFileA(path.c_str(), GENERIC_READ, FILE_SHARE_READ, nullptr, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL,
                         nullptr);
  if (f == INVALID_HANDLE_VALUE) throw ValueError("cannot open '" + path + "'");
  LARGE_INTEGER sz;
  GetFileSizeEx(f, &sz);
  size_ = (size_t)sz.QuadPart;
  if (size_ > 0) {
    HANDLE m = CreateFileMappingA(f, nullptr, PAGE_READONLY, 0, 0, nullptr);
    if (!m) { CloseHandle(f); throw ValueError("cannot map '" + path + "'"); }
    data_ = (const uint8_t*)MapViewOfFile(m, FILE_MAP_READ, 0, 0, 0);
    CloseHandle(m);
  }
  CloseHandle(f);
  if (size_ > 0 && !data_) throw ValueError("cannot map '" + path + "'");
}
MappedFile::~MappedFile() {
  if (data_) UnmapViewOfFile(data_);
}
#else
MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw ValueError("cannot open '" + path + "': " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ValueError("'" + path + "' is not a regular file");
  }
  size_ = (size_t)st.st_size;
  if (size_ > 0) {
    void* p = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw ValueError("cannot map '" + path + "': " + std::strerror(errno));
    }
    data_ = (const uint8_t*)p;
  }
  ::close(fd);
}
MappedFile::~MappedFile() {
  if (data_) munmap((void*)data_, size_);
}
#endif

void MappedFile::drop_pages(const void* p, size_t n) const {
#if !defined(_WIN32)
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), lo = (uintptr_t)p, hi = lo + n;
  const uintptr_t b = (lo + page - 1) / page * page, e = hi / page * page;
  if (!data_ || lo < (uintptr_t)data_ || hi > (uintptr_t)data_ + size_ || e <= b) return;
  madvise((void*)b, e - b, MADV_DONTNEED);
#else
  (void)p;
  (void)n;
#endif
}

}  // namespace ef
