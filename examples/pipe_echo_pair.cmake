# Runs pipe_echo_server and pipe_echo_client as one pipeline, the server's "listening on
# \\.\pipe\NAME" line feeding the client (ctest -P script: -DSERVER= -DCLIENT= [-DEMULATOR=]
# [-DCLIENTS=] [-DBYTES=]). Passes when both exit with 0.
if(NOT DEFINED CLIENTS)
  set(CLIENTS 8)
endif()
if(NOT DEFINED BYTES)
  set(BYTES 262144)
endif()
separate_arguments(emulator UNIX_COMMAND "${EMULATOR}")
execute_process(
  COMMAND ${emulator} "${SERVER}" --once ${CLIENTS}
  COMMAND ${emulator} "${CLIENT}" --name - --clients ${CLIENTS} --bytes ${BYTES}
  RESULTS_VARIABLE results
  TIMEOUT 100)
message(STATUS "pipe_echo_server, pipe_echo_client: ${results}")
if(NOT results STREQUAL "0;0")
  message(FATAL_ERROR "the pipe echo pair failed: exit codes ${results} (server;client)")
endif()
