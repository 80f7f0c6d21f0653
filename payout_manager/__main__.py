from payout_manager.cli import main

main()
