from germinate.cli import main

raise SystemExit(main())
