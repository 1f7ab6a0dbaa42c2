# The architecture, checked on every build (cmake -P, run by the check_architecture target):
#   1. Which source folder may include which: each library includes only what it links.
#        cli -> everything;  trainer -> plan, dist, eval, config, model, data, common;
#        plan -> dist, config, model, common;
#        report -> trainer, eval, common;  dist -> model, common (never trainer/ or config/);
#        eval -> model, data, common;  config -> model, common;  launch -> common;
#        model, data -> common;  common -> nothing.
#   2. The checkpoint's own names (the marker, the resolved config, model_config, sharding.json,
#      the optimizer and RNG parts, moment keys, the per-rank suffix) are spelled in one source file
#      only (trainer/training_state.cpp), so renaming a part cannot break resume or export. Names too
#      generic to search for ("model", "data", "trainer") are not checked here.
# Tests and benchmarks may include anything. Usage: cmake -DSOURCE_DIR=<repo> -P check_architecture.cmake
cmake_minimum_required(VERSION 3.25)

set(allowed_cli cli trainer plan report dist eval config model data common launch)
set(allowed_trainer trainer plan dist eval config model data common)
set(allowed_plan plan dist config model common)
set(allowed_report report trainer eval common)
set(allowed_dist dist model common)
set(allowed_eval eval model data common)
set(allowed_config config model common)
set(allowed_launch launch common)
set(allowed_model model common)
set(allowed_data data common)
set(allowed_common common)
set(project_folders cli trainer plan report dist eval config model data common launch tests bench)

set(problems "")
foreach(folder cli trainer plan report dist eval config model data common launch)
  file(GLOB sources "${SOURCE_DIR}/${folder}/*.h" "${SOURCE_DIR}/${folder}/*.cpp")
  foreach(source ${sources})
    file(STRINGS "${source}" includes REGEX "^#include \"[a-z_]+/")
    foreach(line ${includes})
      string(REGEX REPLACE "^#include \"([a-z_]+)/.*" "\\1" target "${line}")
      if(NOT target IN_LIST project_folders)
        continue()  # a third-party header spelled with quotes
      endif()
      if(NOT target IN_LIST allowed_${folder})
        file(RELATIVE_PATH relative "${SOURCE_DIR}" "${source}")
        string(APPEND problems "  ${relative}: ${folder}/ may not include ${target}/ (${line})\n")
      endif()
    endforeach()
  endforeach()
endforeach()

# Checkpoint names: each literal may appear in trainer/training_state.cpp only.
set(owner "trainer/training_state.cpp")
set(checkpoint_names "\"COMPLETE\"" "\"config.resolved.yaml\"" "\"model_config\"" "\"model_config.json\""
    "\"sharding.json\"" "\"optimizer\"" "\"rng\"" "\"exp_avg/\"" "\"exp_avg_sq/\"" "\"{}.rank{:05d}\"")
file(GLOB_RECURSE library_sources
     "${SOURCE_DIR}/cli/*.cpp" "${SOURCE_DIR}/cli/*.h" "${SOURCE_DIR}/trainer/*.cpp" "${SOURCE_DIR}/trainer/*.h"
     "${SOURCE_DIR}/report/*.cpp" "${SOURCE_DIR}/report/*.h" "${SOURCE_DIR}/dist/*.cpp" "${SOURCE_DIR}/dist/*.h"
     "${SOURCE_DIR}/eval/*.cpp" "${SOURCE_DIR}/eval/*.h" "${SOURCE_DIR}/config/*.cpp" "${SOURCE_DIR}/config/*.h"
     "${SOURCE_DIR}/model/*.cpp" "${SOURCE_DIR}/model/*.h" "${SOURCE_DIR}/data/*.cpp" "${SOURCE_DIR}/data/*.h")
foreach(source ${library_sources})
  file(RELATIVE_PATH relative "${SOURCE_DIR}" "${source}")
  if(relative STREQUAL owner)
    continue()
  endif()
  file(READ "${source}" text)
  foreach(name ${checkpoint_names})
    string(FIND "${text}" "${name}" at)
    if(NOT at EQUAL -1)
      string(APPEND problems "  ${relative}: spells the checkpoint name ${name}, which only ${owner} may\n")
    endif()
  endforeach()
endforeach()

if(problems)
  message(FATAL_ERROR "architecture check failed:\n${problems}")
endif()
