from train.diagnose.cli import main

main()
