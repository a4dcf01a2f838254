# Cross-compilation to 64-bit Arm Linux with Debian's gcc cross toolchain
# (apt-get install g++-aarch64-linux-gnu qemu-user), for CI on x86-64 hosts:
#   cmake -S . -B build/aarch64-tests -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#         -DMNV3EXT_BUILD_TESTS=ON -DMNV3EXT_BUILD_PYTHON=OFF
# MNV3EXT_ARM_ROOTFS (cache variable or environment variable) is an aarch64 Debian root file
# system (tools/ci/arm_emulated.sh builds one at build/aarch64-rootfs): it supplies the target's
# Python headers and libraries and is the -L prefix of qemu, which ctest uses as the emulator
# for the cross-built test executables.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

if(NOT MNV3EXT_ARM_ROOTFS)
  if(DEFINED ENV{MNV3EXT_ARM_ROOTFS})
    set(MNV3EXT_ARM_ROOTFS "$ENV{MNV3EXT_ARM_ROOTFS}")
  else()
    get_filename_component(MNV3EXT_ARM_ROOTFS "${CMAKE_CURRENT_LIST_DIR}/../build/aarch64-rootfs"
                           ABSOLUTE)
  endif()
endif()
set(MNV3EXT_ARM_ROOTFS "${MNV3EXT_ARM_ROOTFS}" CACHE PATH "aarch64 root file system for qemu and target Python")
# try_compile projects re-read this file: hand them the same root file system.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES MNV3EXT_ARM_ROOTFS)

# Target headers/libraries come from the cross sysroot and the root file system only; programs
# (cmake helpers, python for pybind11's tools) from the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu "${MNV3EXT_ARM_ROOTFS}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)  # pybind11's CMake config lives on the host

# Debian's python3.11/pyconfig.h includes <aarch64-linux-gnu/python3.11/pyconfig.h>: let the
# root file system's /usr/include answer what the cross sysroot lacks (searched last).
set(CMAKE_C_FLAGS_INIT "-idirafter ${MNV3EXT_ARM_ROOTFS}/usr/include")
set(CMAKE_CXX_FLAGS_INIT "-idirafter ${MNV3EXT_ARM_ROOTFS}/usr/include")

find_program(MNV3EXT_QEMU_AARCH64 qemu-aarch64)
if(MNV3EXT_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${MNV3EXT_QEMU_AARCH64};-L;${MNV3EXT_ARM_ROOTFS}")
endif()
