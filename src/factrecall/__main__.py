from factrecall.cli import main

main()
