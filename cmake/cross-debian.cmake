# SPDX-License-Identifier: MIT
# Toolchain file for Debian's cross compilers, used by .ci/cross:
#   cmake -DCMAKE_TOOLCHAIN_FILE=cmake/cross-debian.cmake \
#         -DIDEM_CROSS_TRIPLE=aarch64-linux-gnu -DIDEM_CROSS_ROOT=DIR ...
# IDEM_CROSS_TRIPLE  GNU triple of a Debian cross gcc (gcc-TRIPLE package):
#                    aarch64-linux-gnu or arm-linux-gnueabihf
# IDEM_CROSS_ROOT    a directory holding the target's libsqlite3-dev,
#                    uuid-dev and libcmocka-dev (and their runtime packages)
#                    unpacked with dpkg-deb -x
# The C library comes from the cross compiler's own tree, /usr/TRIPLE.
# Tests run through qemu-user (CMAKE_CROSSCOMPILING_EMULATOR).

# try_compile() projects read this file again: hand them the two settings.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES IDEM_CROSS_TRIPLE IDEM_CROSS_ROOT)
if(NOT IDEM_CROSS_TRIPLE OR NOT IDEM_CROSS_ROOT)
  message(FATAL_ERROR "set IDEM_CROSS_TRIPLE and IDEM_CROSS_ROOT")
endif()

set(CMAKE_SYSTEM_NAME Linux)
if(IDEM_CROSS_TRIPLE MATCHES "^aarch64")
  set(CMAKE_SYSTEM_PROCESSOR aarch64)
  set(_idem_qemu qemu-aarch64)
else()
  set(CMAKE_SYSTEM_PROCESSOR arm)
  set(_idem_qemu qemu-arm)
endif()

set(CMAKE_C_COMPILER ${IDEM_CROSS_TRIPLE}-gcc)
# Debian's multiarch layout: libraries in usr/lib/TRIPLE.
set(CMAKE_LIBRARY_ARCHITECTURE ${IDEM_CROSS_TRIPLE})

# Look for the target's headers, libraries and .pc files in its trees only,
# for programs (sh, mandoc, pkg-config) on the build machine.
set(CMAKE_FIND_ROOT_PATH /usr/${IDEM_CROSS_TRIPLE} ${IDEM_CROSS_ROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(ENV{PKG_CONFIG_LIBDIR}
    "${IDEM_CROSS_ROOT}/usr/lib/${IDEM_CROSS_TRIPLE}/pkgconfig:${IDEM_CROSS_ROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${IDEM_CROSS_ROOT}")

# libidem.so needs libsqlite3.so.0 and libuuid.so.1 from the unpacked tree:
# tell the linker where they are when it links programs against it...
set(_idem_libs ${IDEM_CROSS_ROOT}/usr/lib/${IDEM_CROSS_TRIPLE})
set(CMAKE_EXE_LINKER_FLAGS_INIT "-Wl,-rpath-link,${_idem_libs}")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-Wl,-rpath-link,${_idem_libs}")
# ...and the target's loader, run by qemu with the cross tree as its root,
# where to find them at run time.
set(CMAKE_CROSSCOMPILING_EMULATOR
    ${_idem_qemu} -L /usr/${IDEM_CROSS_TRIPLE} -E LD_LIBRARY_PATH=${_idem_libs})
