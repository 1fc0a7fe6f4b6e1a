from protocaffe.cli import run

run()
