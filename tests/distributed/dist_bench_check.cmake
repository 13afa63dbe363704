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

# dist-run: a mechanism without a model form fails on every rank before the model loads ...
execute_process(COMMAND ${MPIEXEC} -np ${NP} --oversubscribe --allow-run-as-root ${ATTNKIT} dist-run
                        --mechanism ring --niah 1024
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
string(REGEX MATCHALL "--mechanism 'ring' has no model form" hits "${err}")
list(LENGTH hits n)
if(rc EQUAL 0 OR NOT n EQUAL NP)
  message(FATAL_ERROR "dist-run --mechanism ring must fail on all ${NP} ranks with the same message (rc ${rc}, ${n} messages): ${err}")
endif()
# ... and Star Attention on Gemma 3 270M (when installed) runs a short prompt; with at most two ranks
# the first block is the anchor of the second, so the answer must equal exact prefill's.
set(prompt ${OUT}/dist_run_prompt.txt)
file(WRITE ${prompt} "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.
The pass key is 48213. Remember it. 48213 is the pass key.
The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.
What is the pass key? The pass key is")
set(json ${OUT}/dist_run_${NP}.json)
file(REMOVE ${json})
execute_process(COMMAND ${MPIEXEC} -np ${NP} --oversubscribe --allow-run-as-root ${ATTNKIT} dist-run
                        --mechanism star --prompt-file ${prompt} --max-tokens 4 --exact --json ${json}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
if(err MATCHES "model was not found")
  message(STATUS "dist-run: Gemma 3 270M not installed, model run not checked")
elseif(NOT rc EQUAL 0)
  message(FATAL_ERROR "dist-run star failed (${rc}): ${out} ${err}")
else()
  file(READ ${json} text)
  string(JSON agree GET ${text} run tokens_agree)
  string(JSON n_tok LENGTH ${text} run star_tokens)
  string(JSON answer GET ${text} run star_text)
  if(NOT n_tok EQUAL 4 OR (NP LESS_EQUAL 2 AND NOT agree) OR answer STREQUAL "")
    message(FATAL_ERROR "dist-run star: bad result ${text}")
  endif()
endif()
