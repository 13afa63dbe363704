# Runs `attnkit dist-bench` under mpirun (ATTNKIT, MPIEXEC, NP, OUT given with -D) and checks its
# record, then checks that a bad option gives the same error on every rank and a non-zero exit.
foreach(mech ring star lasp2)
  set(json ${OUT}/dist_bench_${mech}_${NP}.json)
  file(REMOVE ${json})
  set(extra)
  if(mech STREQUAL "ring")
    set(extra --baseline)
  endif()
  execute_process(COMMAND ${MPIEXEC} -np ${NP} --oversubscribe --allow-run-as-root ${ATTNKIT} dist-bench
                          --mechanism ${mech} --seq 301 --heads-q 4 --heads-kv 2 --head-dim 32 --query 7 --quick
                          --json ${json} ${extra}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "dist-bench ${mech} failed (${rc}): ${out} ${err}")
  endif()
  file(READ ${json} text)
  string(JSON ranks GET ${text} 0 ranks)
  string(JSON bytes GET ${text} 0 bytes_communicated)
  string(JSON wait GET ${text} 0 wait_share)
  string(JSON family GET ${text} 0 family)
  string(JSON seconds GET ${text} 0 seconds)
  string(JSON gflops GET ${text} 0 gflops)
  if(NOT ranks EQUAL NP OR NOT family STREQUAL "distributed" OR NOT bytes GREATER 0 OR wait LESS 0 OR wait GREATER 1
     OR NOT seconds GREATER 0 OR NOT gflops GREATER 0)
    message(FATAL_ERROR "dist-bench ${mech}: bad record ${text}")
  endif()
  if(mech STREQUAL "ring")
    string(JSON speed GET ${text} 0 speed_vs_baseline)
    string(JSON skipped GET ${text} 0 blocks_skipped)
    if(NOT speed GREATER 0 OR NOT skipped GREATER 0)
      message(FATAL_ERROR "dist-bench ring: bad baseline or skip counts ${text}")
    endif()
  endif()
endforeach()

execute_process(COMMAND ${MPIEXEC} -np ${NP} --oversubscribe --allow-run-as-root ${ATTNKIT} dist-bench
                        --mechanism lasp2 --decay sideways --seq 64 --quick
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
string(REGEX MATCHALL "decay 'sideways' is not supported" hits "${err}")
list(LENGTH hits n)
if(rc EQUAL 0 OR NOT n EQUAL NP)
  message(FATAL_ERROR "a bad --decay must fail on all ${NP} ranks with the same message (rc ${rc}, ${n} messages): ${err}")
endif()
