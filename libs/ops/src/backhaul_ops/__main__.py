from backhaul_ops.cli import main

main()
