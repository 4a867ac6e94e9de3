# ---- GPU (docs/gpu.md): tests that run with or without a GPU ----------------
# test_gpu ptx: every case's kernels as PTX, through ptxas for sm_80 and sm_90
#   (no GPU; skipped without ptxas: pip install --no-deps nvidia-cuda-nvcc)
# test_gpu run/api with the fake driver (tests/gpu/fake_cuda.c) and
#   JOPT_CUDA_ARCH=sim: the whole GPU path on the host, against the CPU
# test_gpu run/api with the real driver: skipped (77) without a GPU
# test_gpu nodevice: the errors where there is no GPU
add_library(fake_cuda SHARED tests/gpu/fake_cuda.c)
set_target_properties(fake_cuda PROPERTIES OUTPUT_NAME cuda SUFFIX ".so.1"
  LIBRARY_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fake_cuda)
target_include_directories(fake_cuda SYSTEM PRIVATE ${LLVM_INCLUDE_DIRS})
target_compile_options(fake_cuda PRIVATE -Wno-missing-prototypes) # the driver's names
target_link_libraries(fake_cuda PRIVATE LLVM)

add_executable(test_gpu tests/gpu/test_gpu.c tests/gpu/devmem.c tests/helpers.c)
target_include_directories(test_gpu PRIVATE tests tests/gpu codegen/include)
target_compile_definitions(test_gpu PRIVATE JOPT_SOURCE_DIR="${CMAKE_CURRENT_SOURCE_DIR}")
target_link_libraries(test_gpu PRIVATE jopt_static PkgConfig::CMOCKA m ${CMAKE_DL_LIBS})
add_dependencies(test_gpu fake_cuda)

# ptxas: $JOPT_PTXAS, the PATH, CUDA's folder, or PyPI's nvidia-cuda-nvcc
if(NOT JOPT_PTXAS)
  find_program(JOPT_PTXAS ptxas PATHS /usr/local/cuda/bin)
endif()
if(NOT JOPT_PTXAS)
  find_package(Python3 COMPONENTS Interpreter QUIET)
  if(Python3_Interpreter_FOUND)
    execute_process(COMMAND ${Python3_EXECUTABLE} -c
      "import glob, nvidia, os; print((glob.glob(os.path.join(list(nvidia.__path__)[0], 'cu*/bin/ptxas')) + glob.glob(os.path.join(list(nvidia.__path__)[0], 'cuda_nvcc/bin/ptxas')) + [''])[0])"
      OUTPUT_VARIABLE JOPT_PTXAS_PIP OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(JOPT_PTXAS_PIP)
      set(JOPT_PTXAS ${JOPT_PTXAS_PIP} CACHE FILEPATH "ptxas" FORCE)
    endif()
  endif()
endif()
message(STATUS "jopt: ptxas for the GPU tests: ${JOPT_PTXAS}")

set(JOPT_FAKE_ENV "LD_LIBRARY_PATH=${CMAKE_CURRENT_BINARY_DIR}/fake_cuda;JOPT_CUDA_ARCH=sim;JOPT_SPEC_PATH=")
add_test(NAME gpu_ptx COMMAND test_gpu ptx WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
# the sim runs in four parts, each a quarter of the cases (-j runs them at once)
foreach(k 0 1 2 3)
  add_test(NAME gpu_sim_run_${k} COMMAND test_gpu run ${k}/4
           WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  list(APPEND JOPT_SIM_RUNS gpu_sim_run_${k})
endforeach()
add_test(NAME gpu_sim_api COMMAND test_gpu api WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
add_test(NAME gpu_nodevice COMMAND test_gpu nodevice WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
add_test(NAME gpu_run COMMAND test_gpu run WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
add_test(NAME gpu_api COMMAND test_gpu api WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(gpu_ptx ${JOPT_SIM_RUNS} gpu_sim_api gpu_nodevice gpu_run gpu_api
  PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 1500)
set_tests_properties(gpu_ptx PROPERTIES ENVIRONMENT "JOPT_PTXAS=${JOPT_PTXAS};JOPT_SPEC_PATH=")
set_tests_properties(${JOPT_SIM_RUNS} gpu_sim_api PROPERTIES ENVIRONMENT "${JOPT_FAKE_ENV}")
set_tests_properties(gpu_nodevice PROPERTIES ENVIRONMENT "${JOPT_FAKE_ENV};FAKE_CUDA_DEVICES=0")
set_tests_properties(gpu_run gpu_api PROPERTIES ENVIRONMENT "JOPT_SPEC_PATH=" LABELS gpu)

# jopt.torch on CUDA tensors against torch's CUDA optimizers (skipped
# without torch's CUDA; not under a sanitizer, which Python cannot load)
find_package(Python3 COMPONENTS Interpreter QUIET)
if(NOT JOPT_SANITIZE AND NOT CMAKE_C_FLAGS MATCHES "sanitize" AND Python3_Interpreter_FOUND)
  add_test(NAME python_cuda COMMAND Python3::Interpreter
           ${CMAKE_CURRENT_SOURCE_DIR}/python/tests/test_torch_cuda.py)
  set_tests_properties(python_cuda PROPERTIES SKIP_RETURN_CODE 77 LABELS gpu
    ENVIRONMENT "JOPT_LIBRARY=$<TARGET_FILE:jopt>;JOPT_SPEC_PATH=${CMAKE_CURRENT_SOURCE_DIR}/specs")
endif()

# the jopt command prints a spec's GPU kernels
add_test(NAME jopt_cli_compile_ptx COMMAND jopt_cli compile lamb --emit ptx)
set_tests_properties(jopt_cli_compile_ptx PROPERTIES ENVIRONMENT "JOPT_SPEC_PATH="
  PASS_REGULAR_EXPRESSION "\\.target sm_90.*\\.entry jopt_l0.*sqrt\\.rn\\.f32")
