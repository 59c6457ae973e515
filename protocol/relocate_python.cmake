# flatc's Python code imports its siblings as top-level `ppx.X`; we ship it inside our package as
# probexec.protocol.generated, so rewrite those imports (cmake -DDIR=<generated ppx dir> -P this).
file(GLOB files "${DIR}/*.py")
foreach(f ${files})
  file(READ "${f}" text)
  string(REPLACE "from ppx." "from probexec.protocol.generated." text "${text}")
  string(REPLACE "import ppx." "import probexec.protocol.generated." text "${text}")
  file(WRITE "${f}" "${text}")
endforeach()
