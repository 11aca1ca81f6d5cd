from ecgtext.cli import main

main()
